package oci

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// pulledImage pulls a three-layer image into s and returns it read back
// with Store.Image. Its layers are gzipped: validate reads layers as gzip.
func pulledImage(t *testing.T, s *Store) v1.Image {
	t.Helper()
	reg := newTestRegistry(t)
	ref := reg.push(t, "three:1", imageOf(t,
		gzLayer(t, dir("etc"), file("etc/os-release", "ID=test\n")),
		gzLayer(t, file("usr/bin/tool", "tool")),
		gzLayer(t, symlink("bin", "usr/bin")),
	))
	pi, err := s.Pull(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Image(pi.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("Store.Image: %v", err)
	}
	if d, _ := img.Digest(); d != pi.Digest {
		t.Fatalf("Store.Image digest = %s, want %s", d, pi.Digest)
	}
	return img
}

// gzLayer is a gzipped layer with a true diff id (static layers use the
// digest as their diff id, which validate refuses).
func gzLayer(t *testing.T, ents ...tent) v1.Layer {
	t.Helper()
	b := gzipped(t, tarOf(t, ents...))
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestStoreImageNotFound(t *testing.T) {
	s := newStore(t, "")
	_, err := s.Image(digestOf([]byte("nothing")))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Image of a missing manifest = %v, want ErrNotFound", err)
	}
}

// TestLayoutPutAndRetain: Put writes an image that pkg/v1/layout reads
// and validates, hardlinks the store's blobs, moves the tag; Retain drops
// entries and exactly the blobs no other entry uses.
func TestLayoutPutAndRetain(t *testing.T) {
	s := newStore(t, "")
	base := pulledImage(t, s)
	top, err := mutate.Append(base, mutate.Addendum{Layer: gzLayer(t, file("top", "new"))})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "oci")
	l, err := OpenLayout(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Put(t.Context(), base, "t", map[string]string{"k": "base"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Put(t.Context(), top, "t", map[string]string{"k": "top"}); err != nil {
		t.Fatal(err)
	}
	// Putting the same image again replaces its entry.
	if err := l.Put(t.Context(), top, "t", map[string]string{"k": "top"}); err != nil {
		t.Fatal(err)
	}
	idx, err := l.Index()
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 2 {
		t.Fatalf("index has %d entries, want 2", len(idx.Manifests))
	}
	if a := idx.Manifests[0].Annotations; a[AnnotationRefName] != "" || a["k"] != "base" {
		t.Errorf("previous entry's annotations = %v, want untagged base", a)
	}
	if a := idx.Manifests[1].Annotations; a[AnnotationRefName] != "t" || a["k"] != "top" {
		t.Errorf("new entry's annotations = %v, want tagged top", a)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	topDigest, _ := top.Digest()
	got, err := p.Image(topDigest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(got); err != nil {
		t.Errorf("the layout's image does not validate: %v", err)
	}
	// The base's layers are the store's files, not copies.
	man, _ := base.Manifest()
	for _, d := range man.Layers {
		sp, _ := s.blobPath(d.Digest)
		lp, _ := l.blobPath(d.Digest)
		if !sameInode(t, sp, lp) {
			t.Errorf("layer %s was copied, not linked", shortDigest(d.Digest))
		}
	}
	// A temporary of a crashed writer is collected with the unused blobs.
	stale := filepath.Join(dir, "blobs", "sha256", ".tmp-crashed")
	if err := os.WriteFile(stale, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	baseDigest, _ := base.Digest()
	n, _, err := l.Retain(t.Context(), func(d v1.Descriptor) bool { return d.Digest != baseDigest })
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 { // the base's manifest and config, and the temporary
		t.Errorf("Retain removed %d blobs, want 3", n)
	}
	if _, err := got.Layers(); err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(got); err != nil {
		t.Errorf("the kept image lost a blob: %v", err)
	}
	n, _, err = l.Retain(t.Context(), func(v1.Descriptor) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 { // four layers, config, manifest
		t.Errorf("Retain removed %d blobs, want 6", n)
	}
	if idx, err := l.Index(); err != nil || len(idx.Manifests) != 0 {
		t.Errorf("index after removing everything: %v, %v", idx, err)
	}
}

// TestLayoutBlobChecked: a blob whose bytes do not match its digest is
// not written.
func TestLayoutBlobChecked(t *testing.T) {
	l, err := OpenLayout(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("the real content")
	d := v1.Descriptor{Digest: digestOf(want), Size: int64(len(want))}
	err = l.putBlob(t.Context(), d, func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader([]byte("the evil content"))), nil
	})
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("putBlob of wrong bytes = %v, want ErrDigestMismatch", err)
	}
	ents, err := os.ReadDir(filepath.Join(l.Dir(), "blobs", "sha256"))
	if err != nil || len(ents) != 0 {
		t.Fatalf("blobs after a bad write: %v, %v", ents, err)
	}
}

func sameInode(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return fa.Sys().(*syscall.Stat_t).Ino == fb.Sys().(*syscall.Stat_t).Ino && os.SameFile(fa, fb)
}
