package builder

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
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations of the builders' entries in the layout's index.json.
const (
	annotationRefName = "org.opencontainers.image.ref.name"
	annotationBase    = "dev.vieter.vagent.base"
	annotationBuilder = "dev.vieter.vagent.builder"
)

// The OCI image layout DIR/oci holds every builder image. It is changed
// only under DIR/oci.lock, held exclusively: blobs are written before the
// index entry that uses them, and the index is replaced atomically, so
// that blob collection (under the same lock) never removes a blob that is
// about to be referenced.

// LayoutTag is the tag (annotation org.opencontainers.image.ref.name) of
// the current builder of base in the builders' OCI layout: the canonical
// base reference with ':' and '@' replaced by '-'
// ("docker.io/library/archlinux-base-devel"), because tools split
// "DIR:TAG" at a colon (umoci at the last one). The full reference is in
// the annotation dev.vieter.vagent.base.
func LayoutTag(base string) string {
	return strings.NewReplacer(":", "-", "@", "-").Replace(base)
}

func (m *Manager) layoutDir() string { return filepath.Join(m.dir, layoutDirName) }

func (m *Manager) lockLayout(ctx context.Context) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(m.dir, "oci.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := flockCtx(ctx, f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// initLayout creates the layout if it does not exist.
func (m *Manager) initLayout() error {
	dir := m.layoutDir()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); errors.Is(err, fs.ErrNotExist) {
		if err := writeFileAtomic(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "index.json")); errors.Is(err, fs.ErrNotExist) {
		return m.writeIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex})
	}
	return nil
}

func (m *Manager) blobPath(h v1.Hash) string {
	return filepath.Join(m.layoutDir(), "blobs", h.Algorithm, h.Hex)
}

func (m *Manager) readIndex() (*v1.IndexManifest, error) {
	f, err := os.Open(filepath.Join(m.layoutDir(), "index.json"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	idx, err := v1.ParseIndexManifest(f)
	if err != nil {
		return nil, fmt.Errorf("reading the builders' index.json: %w", err)
	}
	return idx, nil
}

func (m *Manager) writeIndex(idx *v1.IndexManifest) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(m.layoutDir(), "index.json"), b, 0o644)
}

// putBlob stores the file src as blob h: a hardlink when possible (store
// blobs are read-only and content-addressed), else a copy.
func (m *Manager) putBlob(h v1.Hash, src string) error {
	dst := m.blobPath(h)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomic(dst, in)
}

func (m *Manager) putBlobBytes(h v1.Hash, b []byte) error {
	dst := m.blobPath(h)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	return writeAtomic(dst, bytes.NewReader(b))
}

func writeAtomic(dst string, r io.Reader) (retErr error) {
	f, err := os.CreateTemp(filepath.Dir(dst), ".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		f.Close()
		if retErr != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	if err := f.Chmod(0o444); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

// addImage writes img into the layout and makes it the tagged image of
// base (the previous builder of base keeps its entry, untagged, until it
// is removed). blobFile maps layer digests to files holding them.
func (m *Manager) addImage(ctx context.Context, img v1.Image, base, id string, blobFile func(v1.Hash) (string, error)) error {
	lock, err := m.lockLayout(ctx)
	if err != nil {
		return err
	}
	defer lock.Close()
	man, err := img.Manifest()
	if err != nil {
		return err
	}
	for _, l := range man.Layers {
		src, err := blobFile(l.Digest)
		if err != nil {
			return err
		}
		if err := m.putBlob(l.Digest, src); err != nil {
			return fmt.Errorf("writing layer %s: %w", l.Digest, err)
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := m.putBlobBytes(man.Config.Digest, cfg); err != nil {
		return err
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
	if err := m.putBlobBytes(digest, raw); err != nil {
		return err
	}
	idx, err := m.readIndex()
	if err != nil {
		return err
	}
	var keep []v1.Descriptor
	for _, d := range idx.Manifests {
		if d.Annotations[annotationBuilder] == id {
			continue
		}
		if d.Annotations[annotationBase] == base && d.Annotations[annotationRefName] == LayoutTag(base) {
			a := map[string]string{}
			for k, v := range d.Annotations {
				if k != annotationRefName {
					a[k] = v
				}
			}
			d.Annotations = a
		}
		keep = append(keep, d)
	}
	idx.Manifests = append(keep, v1.Descriptor{
		MediaType: mt, Size: int64(len(raw)), Digest: digest,
		Annotations: map[string]string{annotationRefName: LayoutTag(base), annotationBase: base, annotationBuilder: id},
	})
	return m.writeIndex(idx)
}

// removeImage drops builder id from the index and collects the blobs no
// remaining entry uses.
func (m *Manager) removeImage(ctx context.Context, id string) (blobs int, bytes int64, err error) {
	lock, err := m.lockLayout(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer lock.Close()
	idx, err := m.readIndex()
	if err != nil {
		return 0, 0, err
	}
	keep := idx.Manifests[:0]
	for _, d := range idx.Manifests {
		if d.Annotations[annotationBuilder] != id {
			keep = append(keep, d)
		}
	}
	idx.Manifests = keep
	if err := m.writeIndex(idx); err != nil {
		return 0, 0, err
	}
	return m.collectBlobs(idx)
}

// collectBlobs removes the layout blobs idx does not reference. The
// caller holds the layout lock.
func (m *Manager) collectBlobs(idx *v1.IndexManifest) (int, int64, error) {
	used := map[string]bool{}
	for _, d := range idx.Manifests {
		used[d.Digest.Hex] = true
		raw, err := os.ReadFile(m.blobPath(d.Digest))
		if err != nil {
			return 0, 0, fmt.Errorf("reading manifest %s: %w", d.Digest, err)
		}
		man, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return 0, 0, fmt.Errorf("reading manifest %s: %w", d.Digest, err)
		}
		used[man.Config.Digest.Hex] = true
		for _, l := range man.Layers {
			used[l.Digest.Hex] = true
		}
	}
	dir := filepath.Join(m.layoutDir(), "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	var n int
	var size int64
	for _, e := range ents {
		if used[e.Name()] {
			continue
		}
		if fi, err := e.Info(); err == nil {
			size += fi.Size()
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, size, err
		}
		n++
	}
	return n, size, nil
}

// storeImage is a base image read from the oci.Store's blobs (the store
// documents its layout: blobs/sha256/<hex>).
type storeImage struct {
	dir      string
	raw      []byte
	manifest *v1.Manifest
}

func newStoreImage(storeDir string, digest v1.Hash) (v1.Image, *storeImage, error) {
	si := &storeImage{dir: storeDir}
	var err error
	if si.raw, err = os.ReadFile(si.blobPath(digest)); err != nil {
		return nil, nil, fmt.Errorf("reading base manifest: %w", err)
	}
	if si.manifest, err = v1.ParseManifest(bytes.NewReader(si.raw)); err != nil {
		return nil, nil, fmt.Errorf("reading base manifest: %w", err)
	}
	img, err := partial.CompressedToImage(si)
	if err != nil {
		return nil, nil, err
	}
	return img, si, nil
}

func (s *storeImage) blobPath(h v1.Hash) string {
	return filepath.Join(s.dir, "blobs", h.Algorithm, h.Hex)
}

func (s *storeImage) RawManifest() ([]byte, error) { return s.raw, nil }

func (s *storeImage) MediaType() (types.MediaType, error) {
	if s.manifest.MediaType != "" {
		return s.manifest.MediaType, nil
	}
	return types.OCIManifestSchema1, nil
}

func (s *storeImage) RawConfigFile() ([]byte, error) {
	return os.ReadFile(s.blobPath(s.manifest.Config.Digest))
}

func (s *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range s.manifest.Layers {
		if l.Digest == h {
			return &storeLayer{path: s.blobPath(h), desc: l}, nil
		}
	}
	return nil, fmt.Errorf("base image has no layer %s", h)
}

type storeLayer struct {
	path string
	desc v1.Descriptor
}

func (l *storeLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *storeLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *storeLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
