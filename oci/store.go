package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

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

// ImageInfo describes an image in the store.
type ImageInfo struct {
	Ref      string
	Digest   v1.Hash
	Size     int64 // compressed bytes of config and layers
	Pulled   time.Time
	Unpacked bool // a rootfs exists
}

// PruneReport says what Prune removed.
type PruneReport struct {
	Blobs  int   // blobs removed
	Rootfs int   // rootfs trees removed
	Temps  int   // stale temporaries removed
	InUse  int   // unreferenced rootfs trees kept because they are in use
	Bytes  int64 // bytes of blobs removed
}

type refRecord struct {
	Digest v1.Hash   `json:"digest"`
	Pulled time.Time `json:"pulled"`
}

type refIndex struct {
	Refs map[string]refRecord `json:"refs"`
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

func (s *Store) source(r Reference) (source, error) {
	switch r.Transport {
	case TransportRegistry:
		return s.client.source(r)
	case TransportOCILayout, TransportOCIArchive:
		return newLayoutSource(r, s.o.platform)
	case TransportDockerArchive:
		return newDockerArchiveSource(r)
	}
	return nil, fmt.Errorf("%w: transport %q", ErrBadReference, r.Transport)
}

// resolved is an image whose manifest and config are in the store.
type resolved struct {
	ref Reference
	img *Image
	src source // nil when resolved from the store alone
}

func (s *Store) progress(p Progress) {
	if s.o.progress != nil {
		s.o.progress(p)
	}
}

// resolve finds the image's manifest (from the source, or from the store
// for a digest reference already pulled, or when the registry cannot be
// reached) and stores its manifest and config.
func (s *Store) resolve(ctx context.Context, r Reference) (_ *resolved, retErr error) {
	refStr := r.String()
	log := s.o.log.WithField("image", refStr)
	// A digest is immutable: no need to ask the registry again.
	if d, ok := r.Name.(interface{ DigestStr() string }); ok && r.Transport == TransportRegistry {
		if h, err := v1.NewHash(d.DigestStr()); err == nil && s.hasBlob(h) {
			if img, err := s.loadImage(refStr, h); err == nil {
				return &resolved{ref: r, img: img}, nil
			}
		}
	}
	src, err := s.source(r)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			src.close()
		}
	}()
	raw, dgst, err := src.resolve(ctx)
	if err != nil {
		if errors.Is(err, ErrUnreachable) && r.Transport == TransportRegistry {
			if rec, ok := s.lookupRef(refStr); ok {
				if img, lerr := s.loadImage(refStr, rec.Digest); lerr == nil {
					log.Warnf("registry unreachable, using the image pulled %s: %v", rec.Pulled.Format(time.RFC3339), err)
					src.close()
					return &resolved{ref: r, img: img}, nil
				}
			}
		}
		return nil, fmt.Errorf("pulling %s: %w", refStr, err)
	}
	// Which endpoint served it — a mirror, or the origin after the
	// mirrors failed — is what an air-gapped site needs to see.
	if rs, ok := src.(*registrySource); ok {
		log.WithFields(map[string]any{"digest": dgst.String(), "from": rs.served()}).Info("resolved")
	}
	s.progress(Progress{Ref: refStr, Phase: PhaseResolve, Blob: dgst, Index: -1})
	if !s.hasBlob(dgst) {
		if err := s.writeBlob(ctx, dgst, int64(len(raw)), bytes.NewReader(raw), nil); err != nil {
			return nil, fmt.Errorf("pulling %s: %w", refStr, err)
		}
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("pulling %s: parsing manifest: %w", refStr, err)
	}
	if err := checkLayers(m); err != nil {
		return nil, fmt.Errorf("pulling %s: %w", refStr, err)
	}
	if !s.hasBlob(m.Config.Digest) {
		rc, err := src.blob(ctx, m.Config.Digest)
		if err != nil {
			return nil, fmt.Errorf("pulling %s: config: %w", refStr, err)
		}
		err = s.writeBlob(ctx, m.Config.Digest, m.Config.Size, io.LimitReader(rc, maxManifestSize+1), nil)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("pulling %s: config: %w", refStr, err)
		}
	}
	img, err := s.loadImage(refStr, dgst)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", refStr, err)
	}
	return &resolved{ref: r, img: img, src: src}, nil
}

// loadImage reads an image's manifest and config from the store.
func (s *Store) loadImage(ref string, h v1.Hash) (*Image, error) {
	raw, err := s.readBlob(h)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing manifest: %w", err)
	}
	if err := checkLayers(m); err != nil {
		return nil, err
	}
	craw, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(craw))
	if err != nil {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	return &Image{Ref: ref, Digest: h, Manifest: m, Config: cfg}, nil
}

// fetch downloads the missing layers of an image, at most jobs at a time,
// in layer order. ready[i] is closed when layer i is in the store (or
// failed: see errs[i]).
type fetch struct {
	ready   []chan struct{}
	errs    []error
	fetched []bool // layer i was downloaded (and checked) by this fetch
	done    chan struct{}
}

func (s *Store) startFetch(ctx context.Context, res *resolved) *fetch {
	layers := res.img.Manifest.Layers
	f := &fetch{ready: make([]chan struct{}, len(layers)), errs: make([]error, len(layers)), fetched: make([]bool, len(layers)), done: make(chan struct{})}
	todo := make(chan int, len(layers))
	for i, l := range layers {
		f.ready[i] = make(chan struct{})
		if s.hasBlobSize(l.Digest, l.Size) {
			s.progress(Progress{Ref: res.img.Ref, Phase: PhaseCached, Blob: l.Digest, Index: i, Count: len(layers), Done: l.Size, Total: l.Size})
			close(f.ready[i])
			continue
		}
		if res.src == nil {
			f.errs[i] = fmt.Errorf("layer %s: %w (and the registry is unreachable)", shortDigest(l.Digest), ErrNotFound)
			close(f.ready[i])
			continue
		}
		todo <- i
	}
	close(todo)
	var wg sync.WaitGroup
	for range min(s.o.jobs, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range todo {
				f.errs[i] = s.fetchLayer(ctx, res, i)
				f.fetched[i] = f.errs[i] == nil
				close(f.ready[i])
			}
		}()
	}
	go func() {
		wg.Wait()
		close(f.done)
	}()
	return f
}

func (s *Store) fetchLayer(ctx context.Context, res *resolved, i int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	layers := res.img.Manifest.Layers
	l := layers[i]
	rc, err := res.src.blob(ctx, l.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", shortDigest(l.Digest), err)
	}
	defer rc.Close()
	err = s.writeBlob(ctx, l.Digest, l.Size, rc, func(done int64) {
		s.progress(Progress{Ref: res.img.Ref, Phase: PhaseDownload, Blob: l.Digest, Index: i, Count: len(layers), Done: done, Total: l.Size})
	})
	if err != nil {
		return err
	}
	s.progress(Progress{Ref: res.img.Ref, Phase: PhaseVerified, Blob: l.Digest, Index: i, Count: len(layers), Done: l.Size, Total: l.Size})
	return nil
}

// wait waits for every download and returns the first error.
func (f *fetch) wait() error {
	<-f.done
	return errors.Join(f.errs...)
}

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

func (s *Store) unpackRootfs(ctx context.Context, res *resolved) (retErr error) {
	img := res.img
	final := s.rootfsPath(img.Digest)
	log := s.o.log.WithField("image", img.Ref)
	if s.validRootfs(final) {
		return nil
	}
	if _, err := os.Stat(final); err == nil {
		log.Warn("discarding a rootfs that was not flushed to disk before a reboot")
		if _, err := s.removeRootfs(filepath.Base(final)); err != nil {
			return err
		}
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := s.startFetch(ctx, res)
	defer func() {
		cancel()
		<-f.done
	}()
	tmp, lock, err := s.newTemp("rootfs-")
	if err != nil {
		return err
	}
	defer func() {
		lockfile.RemoveTree(tmp)
		lock.Close()
	}()
	dir := filepath.Join(tmp, "rootfs")
	o := defaultUnpackOptions()
	o.log = s.o.log
	o.ref = img.Ref
	o.progress = s.o.progress
	for _, opt := range s.o.unpack {
		if err := opt(o); err != nil {
			return err
		}
	}
	layers := img.Manifest.Layers
	// A blob this fetch downloaded was checked as it was written; a
	// cached one is checked again while it is unpacked.
	open := func(ctx context.Context, i int) (io.ReadCloser, bool, error) {
		select {
		case <-f.ready[i]:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		if f.errs[i] != nil {
			return nil, false, f.errs[i]
		}
		p, err := s.blobPath(layers[i].Digest)
		if err != nil {
			return nil, false, err
		}
		rc, err := os.Open(p)
		return rc, f.fetched[i], err
	}
	if err := unpackLayers(ctx, dir, layers, open, o); err != nil {
		if errors.Is(err, ErrDigestMismatch) {
			// A cached blob went bad on disk: drop it.
			for _, l := range layers {
				if p, perr := s.blobPath(l.Digest); perr == nil && strings.Contains(err.Error(), shortDigest(l.Digest)) {
					os.Remove(p)
				}
			}
		}
		return err
	}
	mark := s.boot
	if s.o.sync || mark == "" {
		if err := lockfile.SyncFS(dir); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			return fmt.Errorf("syncing rootfs: %w", err)
		}
		mark = syncedMark
	}
	// The mark goes first: a tree is never published without one.
	if err := s.writeFile(final+markSuffix, []byte(mark+"\n")); err != nil {
		return err
	}
	if err := os.Rename(dir, final); err != nil {
		if _, serr := os.Stat(final); serr == nil {
			// Another process published it first; its tree may not
			// be flushed even if ours was.
			if mark == syncedMark && s.boot != "" {
				s.writeFile(final+markSuffix, []byte(s.boot+"\n"))
			}
			return nil
		}
		return diskFull(fmt.Errorf("publishing rootfs: %w", err))
	}
	log.WithField("elapsed", time.Since(start).Round(time.Millisecond)).Info("rootfs ready")
	s.progress(Progress{Ref: img.Ref, Phase: PhaseDone, Blob: img.Digest, Index: -1, Count: len(layers)})
	return nil
}

const (
	markSuffix = ".boot"
	syncedMark = "synced"
)

// validRootfs reports whether the tree at final may be used: it was
// published whole (its mark is written before the rename) and either
// flushed to disk or published during this boot. A tree published without
// a flush before a power loss may have lost data: it is unpacked again.
func (s *Store) validRootfs(final string) bool {
	if _, err := os.Stat(final); err != nil {
		return false
	}
	b, err := os.ReadFile(final + markSuffix)
	if err != nil {
		return false
	}
	m := strings.TrimSpace(string(b))
	return m == syncedMark || (m != "" && m == s.boot)
}

// writeFile replaces the file at p atomically.
func (s *Store) writeFile(p string, b []byte) error {
	return diskFull(lockfile.WriteFile(p, b, lockfile.WriteOptions{TmpDir: filepath.Join(s.dir, "tmp")}))
}

// readIndex reads refs.json (an empty index if there is none).
func (s *Store) readIndex() (*refIndex, error) {
	idx := &refIndex{Refs: map[string]refRecord{}}
	b, err := os.ReadFile(filepath.Join(s.dir, "refs.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return idx, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(s.dir, "refs.json"), err)
	}
	if idx.Refs == nil {
		idx.Refs = map[string]refRecord{}
	}
	return idx, nil
}

// updateIndex changes refs.json under its lock, atomically.
func (s *Store) updateIndex(change func(*refIndex) error) error {
	lf, err := os.OpenFile(filepath.Join(s.dir, "refs.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return diskFull(err)
	}
	defer lf.Close()
	if _, err := flock(lf, true, true); err != nil {
		return err
	}
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	if err := change(idx); err != nil {
		return err
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return s.writeFile(filepath.Join(s.dir, "refs.json"), b)
}

func (s *Store) recordRef(ref string, h v1.Hash) error {
	return s.updateIndex(func(idx *refIndex) error {
		idx.Refs[ref] = refRecord{Digest: h, Pulled: time.Now().UTC()}
		return nil
	})
}

func (s *Store) lookupRef(ref string) (refRecord, bool) {
	idx, err := s.readIndex()
	if err != nil {
		return refRecord{}, false
	}
	rec, ok := idx.Refs[ref]
	return rec, ok
}

// Recorded returns the manifest digest that ref resolved to when the
// store last pulled it, and false when the store has no record of ref. It
// reads the store's records only: no network.
func (s *Store) Recorded(ref string) (v1.Hash, bool) {
	r, err := ParseReference(ref)
	if err != nil {
		return v1.Hash{}, false
	}
	rec, ok := s.lookupRef(r.String())
	return rec.Digest, ok
}

// List returns the images in the store, sorted by reference.
func (s *Store) List() ([]ImageInfo, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []ImageInfo
	for ref, rec := range idx.Refs {
		info := ImageInfo{Ref: ref, Digest: rec.Digest, Pulled: rec.Pulled}
		if img, err := s.loadImage(ref, rec.Digest); err == nil {
			info.Size = img.Size()
		}
		info.Unpacked = s.validRootfs(s.rootfsPath(rec.Digest))
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Remove forgets ref and removes its rootfs and blobs unless another
// reference uses them or the rootfs is in use (see Rootfs.Release).
func (s *Store) Remove(ref string) error {
	r, err := ParseReference(ref)
	if err != nil {
		return err
	}
	key := r.String()
	gc, err := s.lockGC(context.Background(), true)
	if err != nil {
		return err
	}
	defer gc.Close()
	var digest v1.Hash
	err = s.updateIndex(func(idx *refIndex) error {
		rec, ok := idx.Refs[key]
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		digest = rec.Digest
		delete(idx.Refs, key)
		return nil
	})
	if err != nil {
		return err
	}
	_, err = s.collect(map[v1.Hash]bool{digest: true})
	return err
}

// Prune removes the blobs and rootfs trees no reference uses (except
// trees in use) and stale temporaries.
func (s *Store) Prune(ctx context.Context) (PruneReport, error) {
	gc, err := s.lockGC(ctx, true)
	if err != nil {
		return PruneReport{}, err
	}
	defer gc.Close()
	rep, err := s.collect(nil)
	if err != nil {
		return rep, err
	}
	n, err := s.removeStaleTemps()
	rep.Temps = n
	return rep, err
}

// collect removes what no reference uses. With only set, it considers just
// the blobs and rootfs of those manifests. The caller holds the gc lock
// exclusively.
func (s *Store) collect(only map[v1.Hash]bool) (PruneReport, error) {
	var rep PruneReport
	idx, err := s.readIndex()
	if err != nil {
		return rep, err
	}
	used := map[v1.Hash]bool{}
	usedRootfs := map[string]bool{}
	addImage := func(set map[v1.Hash]bool, h v1.Hash) {
		set[h] = true
		raw, err := os.ReadFile(filepath.Join(s.dir, "blobs", "sha256", h.Hex))
		if err != nil {
			return
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return
		}
		set[m.Config.Digest] = true
		for _, l := range m.Layers {
			set[l.Digest] = true
		}
	}
	for _, rec := range idx.Refs {
		addImage(used, rec.Digest)
		usedRootfs[rec.Digest.Hex] = true
	}
	var candidates map[v1.Hash]bool
	if only != nil {
		candidates = map[v1.Hash]bool{}
		for h := range only {
			addImage(candidates, h)
		}
	}
	// Rootfs trees.
	ents, err := os.ReadDir(filepath.Join(s.dir, "rootfs"))
	if err != nil {
		return rep, err
	}
	for _, e := range ents {
		if tree, ok := strings.CutSuffix(e.Name(), markSuffix); ok {
			if _, err := os.Stat(filepath.Join(s.dir, "rootfs", tree)); errors.Is(err, fs.ErrNotExist) {
				os.Remove(filepath.Join(s.dir, "rootfs", e.Name()))
			}
			continue
		}
		hex, _, _ := strings.Cut(e.Name(), "-") // a shifted tree: <hex>-<uid>-<gid>
		h := v1.Hash{Algorithm: "sha256", Hex: hex}
		if usedRootfs[hex] || (only != nil && !only[h]) {
			continue
		}
		removed, err := s.removeRootfs(e.Name())
		if err != nil {
			return rep, err
		}
		if removed {
			rep.Rootfs++
		} else {
			rep.InUse++
		}
	}
	// Blobs.
	bdir := filepath.Join(s.dir, "blobs", "sha256")
	ents, err = os.ReadDir(bdir)
	if err != nil {
		return rep, err
	}
	for _, e := range ents {
		h := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if used[h] || (candidates != nil && !candidates[h]) {
			continue
		}
		var size int64
		if fi, err := e.Info(); err == nil {
			size = fi.Size()
		}
		if err := os.Remove(filepath.Join(bdir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, err
		}
		rep.Blobs++
		rep.Bytes += size
	}
	return rep, nil
}

// removeRootfs removes rootfs/<hex> unless it is in use. It is first moved
// to tmp/, so that a crash in the middle leaves a stale temporary, never a
// half tree under rootfs/.
func (s *Store) removeRootfs(hex string) (bool, error) {
	p := filepath.Join(s.dir, "rootfs", hex)
	f, err := os.Open(p)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	ok, err := flock(f, true, false)
	if err != nil || !ok {
		return false, err
	}
	tmp, lock, err := s.newTemp("rm-")
	if err != nil {
		return false, err
	}
	defer lock.Close()
	if err := os.Rename(p, filepath.Join(tmp, "rootfs")); err != nil {
		lockfile.RemoveTree(tmp)
		return false, err
	}
	os.Remove(p + markSuffix)
	return true, lockfile.RemoveTree(tmp)
}
