package builder_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// whiteoutLayer is a gzip layer that deletes the given paths of the layers
// below it (OCI whiteouts).
func whiteoutLayer(t testing.TB, paths ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, p := range paths {
		dir, base := "", p
		if i := strings.LastIndex(p, "/"); i >= 0 {
			dir, base = p[:i+1], p[i+1:]
		}
		if err := tw.WriteHeader(&tar.Header{Name: dir + ".wh." + base, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestArchLikeBuilderWithoutMtab prepares a builder from a base image that
// lacks /etc/mtab (the Arch-like test image plus a layer deleting it), as
// some trimmed Arch-family images do: pacman fails every transaction
// without it. The setup links it to /proc/self/mounts, and pacman installs
// the setup packages from the server's repository.
func TestArchLikeBuilderWithoutMtab(t *testing.T) {
	t.Parallel() // the two Arch-like preparations overlap: each waits on pacman, the registry and the disk
	testkit.RequireRoot(t)
	arch, archDir := testkit.ArchLike(t)
	img, err := mutate.Append(gzipLayers(t, arch, archDir), mutate.Addendum{
		Layer:     static.NewLayer(whiteoutLayer(t, "etc/mtab"), types.OCILayer),
		MediaType: types.OCILayer,
		History:   v1.History{CreatedBy: "delete /etc/mtab", Created: v1.Time{Time: time.Unix(1700000000, 0)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t)
	base := reg.Host() + "/test/archlike-nomtab:" + testkit.ArchLikeTag
	if err := testkit.Push(t.Context(), img, base); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, builder.WithRepos(archRepo(t)))
	ctx := t.Context()
	// The base really lacks it.
	rf, err := e.store.Rootfs(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if out, code, err := run(ctx, e.sb, rf.Dir, 0, "sh", "-c", "test -e /etc/mtab || test -L /etc/mtab"); err != nil || code == 0 {
		t.Fatalf("the base image still has /etc/mtab (exit %d, %v): %s", code, err, out)
	}
	rf.Release()

	var log sandboxtest.Buffer
	l, err := e.m.Acquire(ctx, base, &log)
	if err != nil {
		t.Fatalf("Acquire: %v\n%s", err, log.String())
	}
	defer l.Release()
	for _, want := range []string{"/etc/mtab missing: linking it to ../proc/self/mounts", "installing git"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("setup log lacks %q:\n%s", want, log.String())
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"readlink", "/etc/mtab"}, "../proc/self/mounts"},
		{[]string{"pacman", "-Q", "base-devel", "git"}, "base-devel 1.0-1\ngit 1.0-1"},
	} {
		out, code, err := run(ctx, e.sb, l.Rootfs, 0, c.args...)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, output %q, want %q", c.args, code, out, c.want)
		}
	}
}
