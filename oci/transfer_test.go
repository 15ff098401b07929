package oci

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// imageFiles writes img as the three image files Load reads: an OCI layout
// (tagged v1, and named with containerd's annotation when full is set), its
// tarball, and `docker save` output tagged dockerTag.
func imageFiles(t *testing.T, img v1.Image, full, dockerTag string) (lp, oa, da string) {
	t.Helper()
	tmp := t.TempDir()
	lp = filepath.Join(tmp, "layout")
	p, err := layout.Write(lp, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	ann := map[string]string{refNameAnnotation: "v1"}
	if full != "" {
		ann[containerdNameAnnotation] = full
	}
	if err := p.AppendImage(img, layout.WithAnnotations(ann)); err != nil {
		t.Fatal(err)
	}
	oa = filepath.Join(tmp, "image.oci.tar")
	tarDir(t, lp, oa)
	da = filepath.Join(tmp, "image.docker.tar")
	tag, err := name.NewTag(dockerTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(da, tag, img); err != nil {
		t.Fatal(err)
	}
	return lp, oa, da
}

// unreachable returns an option that makes every registry unreachable.
func unreachable() Option {
	return func(o *options) error {
		o.dial = func(_ context.Context, _, _ string) (net.Conn, error) {
			return nil, errors.New("network is unreachable (test)")
		}
		return nil
	}
}

// TestLoad: an image file of each kind, given as a plain path, is loaded
// under a registry reference (the file's own name, or --tag's), and a
// store that cannot reach any registry then unpacks it by that name.
func TestLoad(t *testing.T) {
	img := threeLayerImage(t)
	want, _ := img.Digest()
	lp, oa, da := imageFiles(t, img, "registry.example/site/arch:base", "example.com/app:1")
	for _, tc := range []struct {
		name, file, as, ref string
	}{
		{"docker-archive, its tag", da, "", "example.com/app:1"},
		{"oci-archive, --tag", oa, "archlinux:base-devel", "docker.io/library/archlinux:base-devel"},
		{"oci layout, containerd's name", lp, "", "registry.example/site/arch:base"},
		{"oci: reference with a tag", "oci:" + lp + ":v1", "r.example/x:y", "r.example/x:y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			im, err := newStore(t, dir, unreachable()).Load(t.Context(), tc.file, tc.as)
			if err != nil {
				t.Fatal(err)
			}
			if im.Ref != tc.ref {
				t.Errorf("loaded as %s, want %s", im.Ref, tc.ref)
			}
			// docker save output has a manifest of its own.
			if tc.file != da && im.Digest != want {
				t.Errorf("digest %s, want %s", im.Digest, want)
			}
			s := newStore(t, dir, unreachable())
			list, err := s.List()
			if err != nil || len(list) != 1 || list[0].Ref != tc.ref {
				t.Errorf("store lists %+v (%v), want only %s", list, err, tc.ref)
			}
			rf := rootfsOf(t, s, tc.ref)
			checkThreeLayers(t, rf.Dir)
			if rf.Digest != im.Digest {
				t.Errorf("rootfs of %s is %s, want the loaded %s", tc.ref, rf.Digest, im.Digest)
			}
		})
	}
}

// TestLoadErrors: what Load refuses, each before anything is recorded.
func TestLoadErrors(t *testing.T) {
	img := threeLayerImage(t)
	lp, oa, _ := imageFiles(t, img, "", "example.com/app:1")
	tmp := t.TempDir()
	notTar := filepath.Join(tmp, "notes.txt")
	if err := os.WriteFile(notTar, []byte("not an image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plainDir := filepath.Join(tmp, "plain")
	if err := os.Mkdir(plainDir, 0o755); err != nil {
		t.Fatal(err)
	}
	other, _ := imageOf(t, layerOf(t, "gzip", file("x", "y"))).Digest()
	for _, tc := range []struct {
		file, as string
		is       error
		msg      string
	}{
		{lp, "", ErrBadReference, "names no registry reference"},
		{oa, "", ErrBadReference, "names no registry reference"},
		{oa, "oci:/x", ErrBadReference, "under a registry reference"},
		{oa, "r.example/x@" + other.String(), ErrDigestMismatch, "is the image"},
		{notTar, "r.example/x:1", ErrBadReference, "not a tar archive"},
		{plainDir, "r.example/x:1", ErrBadReference, "without oci-layout"},
		{filepath.Join(tmp, "missing.tar"), "r.example/x:1", ErrBadReference, "not an image file"},
		{"archlinux:base-devel", "r.example/x:1", ErrBadReference, "not an image file"},
	} {
		t.Run(filepath.Base(tc.file)+" as "+tc.as, func(t *testing.T) {
			s := newStore(t, "")
			_, err := s.Load(t.Context(), tc.file, tc.as)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v with %q", err, tc.is, tc.msg)
			}
			if list, _ := s.List(); len(list) != 0 {
				t.Errorf("a refused load recorded %+v", list)
			}
		})
	}
}

// TestPush: an image of the store and an image file are pushed into a
// registry; a fresh store pulls each back by digest; a file's blobs do not
// stay in the store.
func TestPush(t *testing.T) {
	reg := newTestRegistry(t)
	img := threeLayerImage(t)
	want, _ := img.Digest()
	lp, oa, _ := imageFiles(t, img, "", "example.com/app:1")

	dir := t.TempDir()
	s := newStore(t, dir)
	if _, err := s.Load(t.Context(), oa, "site.example/arch:base"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Push(t.Context(), "site.example/arch:base", reg.host()+"/library/archlinux:base-devel")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("pushed %s, want %s", got, want)
	}
	fresh := newStore(t, "")
	rf := rootfsOf(t, fresh, reg.host()+"/library/archlinux@"+want.String())
	checkThreeLayers(t, rf.Dir)

	// From a file: nothing of it stays in a store without a reference.
	empty := t.TempDir()
	s2 := newStore(t, empty)
	if got, err := s2.Push(t.Context(), lp, reg.host()+"/from/file:1"); err != nil || got != want {
		t.Fatalf("push of a layout: %s, %v", got, err)
	}
	if blobs, _ := os.ReadDir(filepath.Join(empty, "blobs", "sha256")); len(blobs) != 0 {
		t.Errorf("%d blobs of the pushed file left in the store", len(blobs))
	}
	if _, err := remote.Head(mustRef(t, reg.host()+"/from/file:1")); err != nil {
		t.Errorf("the registry lacks the pushed file: %v", err)
	}

	// Into an OCI layout (a removable disk), then loaded elsewhere by the
	// name the layout keeps for it.
	usb := filepath.Join(t.TempDir(), "arch")
	if got, err := s.Push(t.Context(), "site.example/arch:base", "oci:"+usb); err != nil || got != want {
		t.Fatalf("push into a layout: %s, %v", got, err)
	}
	im, err := newStore(t, "").Load(t.Context(), "oci:"+usb+":base", "")
	if err != nil || im.Ref != "site.example/arch:base" || im.Digest != want {
		t.Errorf("load of the pushed layout: %+v, %v; want site.example/arch:base %s", im, err, want)
	}

	for _, tc := range []struct {
		src, dst string
		is       error
	}{
		{"never/pulled:1", reg.host() + "/x:1", ErrNotFound},
		{"site.example/arch:base", "docker-archive:" + t.TempDir() + "/x.tar", ErrBadReference},
		{"site.example/arch:base", "oci:" + t.TempDir() + "@" + want.String(), ErrBadReference},
		{"site.example/arch:base", reg.host() + "/x@sha256:" + strings.Repeat("0", 64), ErrDigestMismatch},
	} {
		if _, err := s.Push(t.Context(), tc.src, tc.dst); !errors.Is(err, tc.is) {
			t.Errorf("push %s %s: err = %v, want %v", tc.src, tc.dst, err, tc.is)
		}
	}
	if _, err := newStore(t, "", unreachable()).Push(t.Context(), lp, "registry.example/x:1"); !errors.Is(err, ErrUnreachable) {
		t.Errorf("push to an unreachable registry: err = %v, want ErrUnreachable", err)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
