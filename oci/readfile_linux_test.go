package oci

import (
	"archive/tar"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadRootfsFile: a file of an unpacked image is read from the store
// without changing it; a symbolic link cannot lead out of the tree, only
// regular files are read, and within a bound; an image not in the store
// is ErrNotFound, also for a store that does not exist.
func TestReadRootfsFile(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.push(t, "arch:1", imageOf(t, layerOf(t, "gzip", dir("etc"), file("etc/pacman.conf", "[core]\nInclude = /etc/pacman.d/mirrorlist\n"),
		symlink("etc/escape", "/../../../../../../../etc/hostname"), symlink("etc/inside", "/etc/pacman.conf"),
		tent{name: "etc/fifo", typ: tar.TypeFifo, mode: 0o644}, file("etc/big", strings.Repeat("x", 100)))))
	dir := t.TempDir()
	s := newStore(t, dir)
	rf := rootfsOf(t, s, ref)
	rf.Release()
	before := treeOf(t, dir)

	b, d, err := ReadRootfsFile(dir, ref, "etc/pacman.conf", 1<<10)
	if err != nil || string(b) != "[core]\nInclude = /etc/pacman.d/mirrorlist\n" || d != rf.Digest {
		t.Errorf("etc/pacman.conf: %q %v %v", b, d, err)
	}
	if b, _, err := ReadRootfsFile(dir, ref, "etc/inside", 1<<10); err != nil || !strings.HasPrefix(string(b), "[core]") {
		t.Errorf("a link inside the tree: %q %v", b, err)
	}
	for name, want := range map[string]string{"etc/escape": "no such file", "etc/fifo": "not a regular file", "etc/big": "larger than 10 bytes", "etc": "not a regular file"} {
		if _, _, err := ReadRootfsFile(dir, ref, name, 10); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
	if _, _, err := ReadRootfsFile(dir, reg.host()+"/other:1", "etc/pacman.conf", 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("another image: %v", err)
	}
	none := filepath.Join(t.TempDir(), "none")
	if _, _, err := ReadRootfsFile(none, ref, "etc/pacman.conf", 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("no store: %v", err)
	}
	if _, err := os.Stat(none); !errors.Is(err, os.ErrNotExist) {
		t.Error("reading created the store")
	}
	if after := treeOf(t, dir); after != before {
		t.Errorf("the store changed:\n%s\n---\n%s", before, after)
	}
}

// treeOf lists the paths, modes and sizes under dir.
func treeOf(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		size := fi.Size()
		if fi.IsDir() {
			size = 0
		}
		fmt.Fprintf(&b, "%s %v %v %d\n", p, fi.Mode(), fi.ModTime(), size)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
