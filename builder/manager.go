package builder

import (
	"context"
	"errors"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/sandbox"
)

// Manager prepares and hands out builders under one directory
// (<data_dir>/builders). It is safe for concurrent use.
type Manager struct {
	store *oci.Store
	sb    *sandbox.Manager
	dir   string
	o     *options
}

// Lease is a builder in use by a build. Rootfs stays valid until Release.
type Lease struct {
	// Rootfs is the builder's flattened tree: the read-only lower of a
	// build (sandbox.Spec.Lower). It must not be written to.
	Rootfs string
	// Base is the canonical base image reference.
	Base string
	// BaseDigest is the manifest digest of the base image the builder was
	// made from; Digest is the builder image's manifest digest.
	BaseDigest, Digest v1.Hash
	// Created is when the builder was prepared.
	Created time.Time
}

// Release ends the lease. It is idempotent.
func (l *Lease) Release() {}

// Info describes a builder on disk.
type Info struct {
	ID         string
	Base       string
	BaseDigest v1.Hash
	Digest     v1.Hash
	Created    time.Time
	Size       int64 // bytes of the builder's own layer (compressed)
	Current    bool  // the builder new builds of Base get
	Stale      bool  // older than the maximum age, or made with other settings
	InUse      bool  // leased (by this or another process)
}

// PruneReport says what Prune removed.
type PruneReport struct {
	Builders int   // builders removed
	InUse    int   // builders that would have been removed but are in use
	Blobs    int   // layout blobs removed
	Temps    int   // stale temporaries removed
	Bytes    int64 // bytes of blobs removed
}

// New opens (creating it if needed) the builder directory dir and removes
// what a crashed preparation left behind.
func New(store *oci.Store, sb *sandbox.Manager, dir string, opts ...Option) (*Manager, error) {
	return nil, errors.ErrUnsupported
}

// Acquire returns a lease on a ready and fresh builder for baseImage,
// preparing one first when there is none (setup output streams to log).
func (m *Manager) Acquire(ctx context.Context, baseImage string, log io.Writer) (*Lease, error) {
	return nil, errors.ErrUnsupported
}

// List returns the builders on disk.
func (m *Manager) List() ([]Info, error) { return nil, errors.ErrUnsupported }

// Prune removes builders that are no longer current or are stale, unless
// in use, and the layout blobs no remaining builder uses.
func (m *Manager) Prune(ctx context.Context) (PruneReport, error) {
	return PruneReport{}, errors.ErrUnsupported
}

// Close stops background refreshes and waits for them.
func (m *Manager) Close() error { return nil }
