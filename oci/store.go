package oci

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/singleflight"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// Store is the content-addressed image store under a data directory:
//
//	blobs/sha256/<hex>   manifests, configs and layers, verified on write
//	refs.json            pulled references -> manifest digest
//	rootfs/<hex>/        flattened trees, one per manifest digest
//	tmp/                 work in progress, each entry locked by its writer
//
// A Store may be used from several goroutines and several processes at
// once.
type Store struct {
	dir          string
	o            *options
	rootfsSuffix string
	// uidShift, gidShift: WithIDShift of its unpacks.
	uidShift, gidShift uint32
	boot               string // this boot's id, "" if unknown
	client             *registryClient
	flight             singleflight.Group
	budget             Budget // of every unpack (WithBudget)
}

// Image is an image whose manifest and config are in the store.
type Image struct {
	Ref      string  // canonical reference
	Digest   v1.Hash // digest of the (platform's) image manifest
	Manifest *v1.Manifest
	Config   *v1.ConfigFile
}

// Size is the size of the image's blobs (compressed layers and config).
func (img *Image) Size() int64 {
	n := img.Manifest.Config.Size
	for _, l := range img.Manifest.Layers {
		n += l.Size
	}
	return n
}

// Rootfs is a flattened image tree in the store. Dir must be treated as
// read-only (use it as an overlay lower directory). It holds a shared lock
// that keeps Remove and Prune away from the tree until Release.
type Rootfs struct {
	Dir    string
	Digest v1.Hash
	Ref    string
	Config *v1.ConfigFile

	mu   sync.Mutex
	lock *os.File
}

// Release drops the rootfs's lock. It may be called more than once.
func (r *Rootfs) Release() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lock == nil {
		return nil
	}
	err := r.lock.Close()
	r.lock = nil
	return err
}

// NewStore opens (creating it if needed) the store in dir, and removes
// stale temporaries left by a crashed process.
func NewStore(dir string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	// Image trees hold setuid-root and file-capability binaries, extracted
	// as real root (right for the container): no other host user may
	// reach them, so every directory of the store is 0700, whatever the
	// umask and whatever an earlier version left. The sandbox does not
	// need the path: the agent opens a tree as root (open_tree, a bind
	// mount) and gives the container that mount. Missing ancestors (the
	// data directory) are created searchable as before: the sandbox's
	// runs/ may share them, and the mapped root must traverse those.
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, diskFull(fmt.Errorf("creating store: %w", err))
	}
	for _, d := range []string{"", "blobs", "blobs/sha256", "rootfs", "tmp"} {
		if err := os.Mkdir(filepath.Join(abs, d), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, diskFull(fmt.Errorf("creating store: %w", err))
		}
		if err := os.Chmod(filepath.Join(abs, d), 0o700); err != nil {
			return nil, err
		}
	}
	c, err := newRegistryClient(o)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: abs, o: o, client: c, boot: bootID()}
	uo := defaultUnpackOptions()
	for _, opt := range o.unpack {
		if err := opt(uo); err != nil {
			return nil, err
		}
	}
	s.budget = uo.budget
	s.uidShift, s.gidShift = uo.uidShift, uo.gidShift
	if uo.uidShift != 0 || uo.gidShift != 0 {
		s.rootfsSuffix = fmt.Sprintf("-%d-%d", uo.uidShift, uo.gidShift)
	}
	if n, err := s.removeStaleTemps(); err != nil {
		return nil, err
	} else if n > 0 {
		o.log.WithField("count", n).Info("removed stale temporaries of an interrupted pull")
	}
	return s, nil
}

// IDShift returns the shift of the owners of the store's trees
// (WithIDShift among its unpack options; default 0, 0). Trees made from
// them (builder images) must be unpacked with the same shift.
func (s *Store) IDShift() (uid, gid uint32) { return s.uidShift, s.gidShift }

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Budget returns the budget of the store's unpacks (WithBudget, with the
// defaults filled in): what one image may cost. Layers made from a run's
// upper directory (builder images) are held to it too.
func (s *Store) Budget() Budget { return s.budget }

// lockGC takes the store's collection lock: shared for pulls (their blobs
// are not referenced until they finish), exclusive for Remove and Prune.
func (s *Store) lockGC(ctx context.Context, exclusive bool) (*os.File, error) {
	return lockFile(ctx, filepath.Join(s.dir, "gc.lock"), exclusive)
}

// resolveLocked parses and resolves ref while holding a shared lock on
// gc.lock, so that Prune does not collect the image's blobs before its
// reference is recorded. done releases the lock and the image source.
func (s *Store) resolveLocked(ctx context.Context, ref string) (*resolved, func(), error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, nil, err
	}
	gc, err := s.lockGC(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	res, err := s.resolve(ctx, r)
	if err != nil {
		gc.Close()
		return nil, nil, err
	}
	return res, func() {
		if res.src != nil {
			res.src.close()
		}
		gc.Close()
	}, nil
}

// Pull resolves ref and fetches every blob of its image into the store.
// Blobs already in the store are not requested again.
func (s *Store) Pull(ctx context.Context, ref string) (*Image, error) {
	res, done, err := s.resolveLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer done()
	if err := s.startFetch(ctx, res).wait(); err != nil {
		return nil, fmt.Errorf("pulling %s: %w", res.img.Ref, err)
	}
	if s.o.sync {
		if err := lockfile.SyncFS(s.dir); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			return nil, fmt.Errorf("syncing store: %w", err)
		}
	}
	if err := s.recordRef(res.img.Ref, res.img.Digest); err != nil {
		return nil, err
	}
	return res.img, nil
}

// Rootfs pulls ref and returns the flattened tree of its image, unpacking
// it once per image digest: into a temporary directory first, published by
// a rename when complete. Layers are downloaded in parallel and applied in
// order as they arrive. The caller must Release the result.
func (s *Store) Rootfs(ctx context.Context, ref string) (*Rootfs, error) {
	res, done, err := s.resolveLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer done()
	img := res.img
	if _, err, _ := s.flight.Do(img.Digest.Hex, func() (any, error) {
		return nil, s.unpackRootfs(ctx, res)
	}); err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", img.Ref, err)
	}
	if err := s.recordRef(img.Ref, img.Digest); err != nil {
		return nil, err
	}
	rf := &Rootfs{Dir: s.rootfsPath(img.Digest), Digest: img.Digest, Ref: img.Ref, Config: img.Config}
	if rf.lock, err = os.Open(rf.Dir); err != nil {
		return nil, err
	}
	if _, err := flock(rf.lock, false, true); err != nil {
		rf.lock.Close()
		return nil, err
	}
	return rf, nil
}
