package oci

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSmokeRootfs(t *testing.T) {
	reg := newTestRegistry(t)
	img := imageOf(t,
		layerOf(t, "gzip", dir("etc"), file("etc/hello", "hi"), file("etc/gone", "x")),
		layerOf(t, "zstd", file("etc/.wh.gone", ""), file("etc/new", "new")),
	)
	ref := reg.push(t, "test/smoke:1", img)
	s, err := NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rf, err := s.Rootfs(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Release()
	b, err := os.ReadFile(filepath.Join(rf.Dir, "etc/hello"))
	if err != nil || string(b) != "hi" {
		t.Fatalf("hello: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(rf.Dir, "etc/gone")); !os.IsNotExist(err) {
		t.Fatalf("gone: %v", err)
	}
}
