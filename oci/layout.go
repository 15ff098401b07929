package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// AnnotationRefName is the index annotation that names (tags) an image in
// an OCI image layout: `skopeo copy oci:DIR:TAG`, `umoci unpack --image
// DIR:TAG`.
const AnnotationRefName = "org.opencontainers.image.ref.name"

// Layout is an OCI image layout directory that vagent writes images into
// (the builders' images), for skopeo, umoci, crane or go-containerregistry's
// pkg/v1/layout to read.
//
// It is read with pkg/v1/layout but not written with it: that package
// writes index.json in place (os.WriteFile, so a crash can leave an empty
// or cut index and lose every entry) and blobs straight under their final
// names without checking their digests (a crash leaves a blob of the right
// name and wrong content, which it later skips as present). Layout writes
// every blob through a digest check into a locked temporary renamed into
// place, and replaces index.json atomically, flushed before the rename.
//
// Changes hold an exclusive lock on DIR.lock (beside the layout, which
// tools would otherwise list as a stray file): blobs are written before
// the index entry that uses them, and Retain collects blobs under the same
// lock, so a blob about to be referenced is never collected.
type Layout struct {
	dir   string
	store *Store
}

// OpenLayout opens the OCI image layout in dir, creating it if needed.
// With a store, Put hardlinks the blobs it has instead of copying them
// (store blobs are read-only and content-addressed); store may be nil.
func OpenLayout(dir string, store *Store) (*Layout, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	l := &Layout{dir: abs, store: store}
	if err := os.MkdirAll(filepath.Join(abs, "blobs", "sha256"), 0o755); err != nil {
		return nil, diskFull(err)
	}
	sync := lockfile.WriteOptions{Sync: true}
	if _, err := os.Stat(filepath.Join(abs, "oci-layout")); errors.Is(err, fs.ErrNotExist) {
		if err := lockfile.WriteFile(filepath.Join(abs, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), sync); err != nil {
			return nil, diskFull(err)
		}
	}
	if _, err := os.Stat(filepath.Join(abs, "index.json")); errors.Is(err, fs.ErrNotExist) {
		if err := l.writeIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Dir returns the layout's directory.
func (l *Layout) Dir() string { return l.dir }

func (l *Layout) lock(ctx context.Context) (*os.File, error) {
	return lockFile(ctx, l.dir+".lock", true)
}

func (l *Layout) blobPath(h v1.Hash) (string, error) {
	n, err := blobName(h)
	if err != nil {
		return "", err
	}
	return filepath.Join(l.dir, filepath.FromSlash(n)), nil
}

// Index returns the layout's index.json.
func (l *Layout) Index() (*v1.IndexManifest, error) {
	ii, err := layout.Path(l.dir).ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(l.dir, "index.json"), err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(l.dir, "index.json"), err)
	}
	return im, nil
}

func (l *Layout) writeIndex(idx *v1.IndexManifest) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return diskFull(lockfile.WriteFile(filepath.Join(l.dir, "index.json"), b, lockfile.WriteOptions{Sync: true}))
}

// Put writes img's blobs into the layout and adds it to the index with
// the annotations given, tagged tag (annotation AnnotationRefName): the
// entry that had the tag keeps its place, untagged, and an entry of the
// same digest is replaced.
func (l *Layout) Put(ctx context.Context, img v1.Image, tag string, annotations map[string]string) error {
	lock, err := l.lock(ctx)
	if err != nil {
		return err
	}
	defer lock.Close()
	man, err := img.Manifest()
	if err != nil {
		return err
	}
	for _, d := range man.Layers {
		err := l.putBlob(ctx, d, func() (io.ReadCloser, error) {
			ly, err := img.LayerByDigest(d.Digest)
			if err != nil {
				return nil, err
			}
			return ly.Compressed()
		})
		if err != nil {
			return fmt.Errorf("writing layer %s: %w", shortDigest(d.Digest), err)
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := l.putBytes(ctx, man.Config.Digest, cfg); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	if err := l.putBytes(ctx, digest, raw); err != nil {
		return fmt.Errorf("writing manifest: %w", err)
	}
	idx, err := l.Index()
	if err != nil {
		return err
	}
	var keep []v1.Descriptor
	for _, d := range idx.Manifests {
		if d.Digest == digest {
			continue
		}
		if d.Annotations[AnnotationRefName] == tag {
			a := map[string]string{}
			for k, v := range d.Annotations {
				if k != AnnotationRefName {
					a[k] = v
				}
			}
			d.Annotations = a
		}
		keep = append(keep, d)
	}
	a := map[string]string{AnnotationRefName: tag}
	for k, v := range annotations {
		a[k] = v
	}
	idx.Manifests = append(keep, v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: digest, Annotations: a})
	return l.writeIndex(idx)
}

func (l *Layout) putBytes(ctx context.Context, h v1.Hash, b []byte) error {
	return l.putBlob(ctx, v1.Descriptor{Digest: h, Size: int64(len(b))}, func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// putBlob writes blob d unless the layout has it: a hardlink to the
// store's file when the store has it, else a checked copy.
func (l *Layout) putBlob(ctx context.Context, d v1.Descriptor, open func() (io.ReadCloser, error)) error {
	dst, err := l.blobPath(d.Digest)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dst); err == nil && fi.Size() == d.Size {
		return nil
	}
	if l.store != nil && l.store.hasBlobSize(d.Digest, d.Size) {
		if src, err := l.store.blobPath(d.Digest); err == nil {
			if err := os.Link(src, dst); err == nil || errors.Is(err, fs.ErrExist) {
				return nil
			}
		}
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return diskFull(lockfile.Write(dst, lockfile.WriteOptions{Perm: 0o444, Sync: true}, func(f *os.File) error {
		return copyVerified(ctx, f, d.Digest, d.Size, rc)
	}))
}

// Retain keeps the index entries keep accepts, drops the others, and
// removes the blobs no remaining entry uses (stale temporaries included).
// It reports how many blobs it removed and their bytes.
func (l *Layout) Retain(ctx context.Context, keep func(v1.Descriptor) bool) (blobs int, size int64, err error) {
	lock, err := l.lock(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer lock.Close()
	idx, err := l.Index()
	if err != nil {
		return 0, 0, err
	}
	kept := idx.Manifests[:0]
	for _, d := range idx.Manifests {
		if keep(d) {
			kept = append(kept, d)
		}
	}
	dropped := len(kept) != len(idx.Manifests)
	idx.Manifests = kept
	if dropped {
		if err := l.writeIndex(idx); err != nil {
			return 0, 0, err
		}
	}
	used := map[string]bool{}
	for _, d := range idx.Manifests {
		used[d.Digest.Hex] = true
		p, err := l.blobPath(d.Digest)
		if err != nil {
			return 0, 0, err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return 0, 0, fmt.Errorf("reading manifest %s: %w", d.Digest, err)
		}
		man, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return 0, 0, fmt.Errorf("reading manifest %s: %w", d.Digest, err)
		}
		used[man.Config.Digest.Hex] = true
		for _, ly := range man.Layers {
			used[ly.Digest.Hex] = true
		}
	}
	dir := filepath.Join(l.dir, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		if used[e.Name()] {
			continue
		}
		if fi, err := e.Info(); err == nil {
			size += fi.Size()
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return blobs, size, err
		}
		blobs++
	}
	return blobs, size, nil
}
