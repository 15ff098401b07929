package oci

// The store's blobs and temporaries: paths, verified writes, reads.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vieter-v/vagent/internal/lockfile"
)

func (s *Store) blobPath(h v1.Hash) (string, error) {
	n, err := blobName(h)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.dir, filepath.FromSlash(n)), nil
}

// rootfsPath is where the tree of manifest h is. Trees unpacked with an id
// shift are kept apart: rootfs/<hex>-<uid offset>-<gid offset>.
func (s *Store) rootfsPath(h v1.Hash) string {
	return filepath.Join(s.dir, "rootfs", h.Hex+s.rootfsSuffix)
}

// hasBlob reports whether a blob is in the store.
func (s *Store) hasBlob(h v1.Hash) bool {
	p, err := s.blobPath(h)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// hasBlobSize is hasBlob, also checking the size when it is known (a file
// cut short by a power loss is fetched again).
func (s *Store) hasBlobSize(h v1.Hash, size int64) bool {
	p, err := s.blobPath(h)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && (size <= 0 || fi.Size() == size)
}

func (s *Store) readBlob(h v1.Hash) ([]byte, error) {
	p, err := s.blobPath(h)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if got := digestOf(b); got != h {
		os.Remove(p)
		return nil, fmt.Errorf("blob %s: %w: got %s", h, ErrDigestMismatch, got)
	}
	return b, nil
}

// newTemp creates a directory under tmp/, locked until the returned file
// is closed (or the process dies).
func (s *Store) newTemp(prefix string) (path string, lock *os.File, err error) {
	if path, lock, err = lockfile.MkdirTemp(filepath.Join(s.dir, "tmp"), prefix); err != nil {
		return "", nil, diskFull(err)
	}
	return path, lock, nil
}

// removeStaleTemps removes the temporaries whose writer is gone.
func (s *Store) removeStaleTemps() (int, error) {
	return lockfile.RemoveStale(filepath.Join(s.dir, "tmp"))
}

// writeBlob copies r into the store as blob h, checking the digest and,
// if it is known (>= 0), the size. Nothing is kept from a bad blob.
func (s *Store) writeBlob(ctx context.Context, h v1.Hash, size int64, r io.Reader, progress func(done int64)) error {
	dst, err := s.blobPath(h)
	if err != nil {
		return err
	}
	return diskFull(lockfile.Write(dst, lockfile.WriteOptions{TmpDir: filepath.Join(s.dir, "tmp"), Perm: 0o444}, func(f *os.File) error {
		return copyVerified(ctx, f, h, size, &countingReader{r: r, report: progress})
	}))
}

// copyVerified copies r to w, checking that it is the blob h (of size
// bytes, if size >= 0).
func copyVerified(ctx context.Context, w io.Writer, h v1.Hash, size int64, r io.Reader) error {
	hh := sha256.New()
	if size >= 0 {
		r = io.LimitReader(r, size+1)
	}
	buf := make([]byte, 1<<20)
	n, err := io.CopyBuffer(io.MultiWriter(w, hh), ctxReader{ctx, r}, buf)
	if err != nil {
		return fmt.Errorf("blob %s: %w", shortDigest(h), err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("blob %s: %w: %d bytes, want %d", shortDigest(h), ErrDigestMismatch, n, size)
	}
	got := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", hh.Sum(nil))}
	if got != h {
		return fmt.Errorf("blob %s: %w: got %s", shortDigest(h), ErrDigestMismatch, got)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// writeFile replaces the file at p atomically.
func (s *Store) writeFile(p string, b []byte) error {
	return diskFull(lockfile.WriteFile(p, b, lockfile.WriteOptions{TmpDir: filepath.Join(s.dir, "tmp")}))
}
