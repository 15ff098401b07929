package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestBuildLocalDir runs `vagent build` on a local directory, as root
// through sudo would: real makepkg in a sandbox on a builder made from the
// Arch-like image in a local registry, with base-devel and git from a
// --repo-url repository. The package lands in --out owned by SUDO_UID,
// the log streams to stdout, and the source directory is not changed.
func TestBuildLocalDir(t *testing.T) {
	testkit.RequireRoot(t)
	img, _ := testkit.ArchLike(t)
	reg := testkit.StartTestRegistry(t)
	base := reg.Host() + "/test/archlike:latest"
	if err := testkit.Push(t.Context(), img, base); err != nil {
		t.Fatal(err)
	}
	srv, ts := vieterserver.NewTest(t)
	for _, name := range []string{"base-devel", "git"} {
		pkg, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: name, Version: "1-1", Arch: "any"}, nil, vieterserver.Zstd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Publish("deps", pkg); err != nil {
			t.Fatal(err)
		}
	}
	dir := sandboxtest.Dir(t)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"sub/PKGBUILD": `pkgname=local
pkgver=0.3
pkgrel=1
pkgdesc="local test"
arch=(any)
license=(MIT)
source=(data.txt)
sha256sums=(SKIP)
package() { install -Dm644 data.txt "$pkgdir/usr/share/local/data.txt"; }
`,
		"sub/data.txt": "private data\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before := treeState(t, src)
	out := filepath.Join(dir, "out")
	t.Setenv("SUDO_UID", "4242")
	t.Setenv("SUDO_GID", "4343")
	var stdout, stderr bytes.Buffer
	code := run1([]string{"build", "--data-dir", filepath.Join(dir, "data"), "--base-image", base,
		"--repo-url", ts.URL + "/deps", "--seccomp=" + strconv.FormatBool(sandbox.SeccompSupported),
		"--path", "sub", "--out", out, "--timeout", "10m", src}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	log := stdout.String()
	for _, want := range []string{"+ cp -a /run/vagent-src/. /build/repo", "+ cd -- /build/repo/sub", "Finished making: local 0.3-1",
		"vagent: success (wrote local-0.3-1-any.pkg.tar.zst); exit code 0"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	fi, err := os.Stat(filepath.Join(out, "local-0.3-1-any.pkg.tar.zst"))
	if err != nil {
		t.Fatalf("package not in --out: %v\n%s", err, log)
	}
	for _, p := range []string{out, filepath.Join(out, fi.Name())} {
		st, _ := os.Stat(p)
		if s := st.Sys().(*syscall.Stat_t); s.Uid != 4242 || s.Gid != 4343 {
			t.Errorf("%s owned by %d:%d, want the invoking user 4242:4343", p, s.Uid, s.Gid)
		}
	}
	if after := treeState(t, src); after != before {
		t.Errorf("source directory changed:\n%s\n---\n%s", before, after)
	}
}

// treeState describes every file of a tree: name, mode, owner, size,
// mtime and content.
func treeState(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		b.WriteString(p + " " + fi.Mode().String() + " " + strconv.Itoa(int(st.Uid)) + " " + strconv.FormatInt(fi.Size(), 10) + " " + fi.ModTime().String())
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			b.Write(data)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
