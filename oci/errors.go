package oci

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. Errors returned by this package wrap one of these where
// it applies; compare with errors.Is.
var (
	// ErrBadReference is returned for a reference that cannot be parsed.
	ErrBadReference = errors.New("invalid image reference")
	// ErrUnknownImage means the registry or archive has no such image
	// (or no image for the agent's platform).
	ErrUnknownImage = errors.New("unknown image")
	// ErrUnauthorized means the registry refused the credentials (or their
	// absence): HTTP 401 or 403.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnreachable means no registry endpoint (mirror or origin) could be
	// reached at all.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrDigestMismatch means a blob's content does not match its digest.
	// Nothing is cached from such a blob.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrDiskFull wraps ENOSPC and EDQUOT from writes to the data dir or a
	// rootfs.
	ErrDiskFull = errors.New("disk full")
	// ErrUnsafeEntry is returned for a layer entry that is rejected because
	// it could write outside the target directory (or creates a device node
	// when that is not permitted). The error names the layer and the entry.
	ErrUnsafeEntry = errors.New("unsafe layer entry")
	// ErrBudgetExceeded is returned when unpacking an image would go over
	// its Budget (decompressed bytes, declared file sizes, entries, path
	// depth). The error names the layer and, where there is one, the entry.
	ErrBudgetExceeded = errors.New("image exceeds the unpack budget")
	// ErrNotFound means the store has no image for the reference.
	ErrNotFound = errors.New("image not in store")
	// ErrUnsupportedMedia is returned for manifests or layers of a media
	// type this package cannot unpack (foreign, encrypted, schema 1).
	ErrUnsupportedMedia = errors.New("unsupported media type")
	// ErrStoreBusy is returned when a store lock could not be taken before
	// the context ended.
	ErrStoreBusy = errors.New("image store busy")
)

// diskFull marks ENOSPC and EDQUOT with ErrDiskFull.
func diskFull(err error) error {
	if err != nil && !errors.Is(err, ErrDiskFull) && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}
