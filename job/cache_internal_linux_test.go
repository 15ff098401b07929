package job

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/testkit"
)

// TestRunCache checks where a build's package cache comes from: the shared
// directory by default or as configured, a private one removed after the
// build when the shared cache is off.
func TestRunCache(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []Option
		shared func(dir string) string // "" for a private cache
	}{
		{"default", nil, func(dir string) string { return filepath.Join(dir, "pacman-cache") }},
		{"configured", []Option{WithCacheDir("/CACHE")}, nil},
		{"off", []Option{WithCacheDir("")}, func(string) string { return "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := defaultOptions()
			for _, opt := range tc.opts {
				if err := opt(o); err != nil {
					t.Fatal(err)
				}
			}
			want := ""
			if tc.shared != nil {
				want = tc.shared(dir)
			} else {
				want = filepath.Join(dir, "shared-cache")
				o.cacheDir = want
			}
			b := &Runner{opts: o, dir: dir}
			if err := b.prepareDir(); err != nil {
				t.Fatal(err)
			}
			got, drop, err := b.runCache()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(got, ".vagent.lock")); err != nil {
				t.Errorf("cache %s has no lock file: %v", got, err)
			}
			if want != "" {
				if want = filepath.Join(want, cacheTree); got != want {
					t.Errorf("cache = %s, want the shared %s", got, want)
				}
				drop()
				if _, err := os.Stat(got); err != nil {
					t.Errorf("shared cache removed after the build: %v", err)
				}
				return
			}
			if filepath.Dir(filepath.Dir(got)) != b.runsDir() {
				t.Errorf("private cache %s is not under %s", got, b.runsDir())
			}
			drop()
			if _, err := os.Stat(filepath.Dir(got)); !os.IsNotExist(err) {
				t.Errorf("private cache %s still there after the build: %v", got, err)
			}
		})
	}
	if err := WithCacheDir("relative/dir")(defaultOptions()); err == nil {
		t.Error("WithCacheDir accepted a relative path")
	}
}

// TestCacheLayout checks the modes and owners of a package cache: the
// directory itself private to root, the tree builds see owned by the mapped
// root, so that nothing a build writes there is reachable by a host user.
func TestCacheLayout(t *testing.T) {
	testkit.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "cache")
	tree, err := initCache(dir, 100000, 100001, 65536)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path     string
		mode     os.FileMode
		uid, gid uint32
	}{{dir, 0o700, 0, 0}, {tree, 0o755, 100000, 100001}} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || fi.Mode().Perm() != c.mode || st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("%s: %v %d:%d, want a directory %v %d:%d", c.path, fi.Mode(), st.Uid, st.Gid, c.mode, c.uid, c.gid)
		}
	}
}

// TestCacheLockPlanted: a build may replace the cache lock by a symbolic
// link (O_CREATE would create its target as root), a FIFO (an open would
// block the agent) or a directory. initCache replaces it by a regular file
// and never touches the link's target.
func TestCacheLockPlanted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, lock, target string)
	}{
		{"symlink", func(t *testing.T, lock, target string) {
			if err := os.Symlink(target, lock); err != nil {
				t.Fatal(err)
			}
		}},
		{"fifo", func(t *testing.T, lock, target string) {
			if err := unix.Mkfifo(lock, 0o666); err != nil {
				t.Fatal(err)
			}
		}},
		{"directory", func(t *testing.T, lock, target string) {
			if err := os.MkdirAll(filepath.Join(lock, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"hardlink", func(t *testing.T, lock, target string) {
			if err := os.WriteFile(target, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(target, lock); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "cache")
			tree, err := initCache(dir, os.Getuid(), os.Getgid(), 65536)
			if err != nil {
				t.Fatal(err)
			}
			lock := filepath.Join(tree, lockName)
			if err := os.Remove(lock); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(base, "nologin")
			tc.plant(t, lock, target)
			done := make(chan error, 1)
			go func() { _, err := initCache(dir, os.Getuid(), os.Getgid(), 65536); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("initCache blocked on the planted lock")
			}
			fi, err := os.Lstat(lock)
			if err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("lock after initCache: %v, %v; want a regular file", fi, err)
			}
			_, err = os.Lstat(target)
			if tc.name == "hardlink" {
				if err != nil {
					t.Errorf("the hardlinked file went away: %v", err)
				}
			} else if !os.IsNotExist(err) {
				t.Errorf("initCache created the link's target %s: %v", target, err)
			}
		})
	}
}

// TestCacheFollowsIDRange: when the data dir's id range changes (vagent
// picked a free range for a data dir of the old default 100000, or
// id_range changed), what the earlier builds left in the cache is given
// the same ids of the new range; links are not followed, ids outside the
// old range stay.
func TestCacheFollowsIDRange(t *testing.T) {
	testkit.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "cache")
	pkg := filepath.Join(dir, cacheTree)
	if _, err := initCache(dir, 100000, 100000, 65536); err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(t.TempDir(), "host-file")
	mustWrite := func(p string, uid, gid int) {
		t.Helper()
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(host, 0, 0)
	mustWrite(filepath.Join(pkg, "a-1-1-any.pkg.tar.zst"), 100000, 100000)
	if err := os.Mkdir(filepath.Join(pkg, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(pkg, "sub"), 100000, 100000); err != nil {
		t.Fatal(err)
	}
	mustWrite(filepath.Join(pkg, "sub", "b.part"), 101000, 101000)
	mustWrite(filepath.Join(pkg, "root-owned"), 0, 0)
	if err := os.Symlink(host, filepath.Join(pkg, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(pkg, "link"), 100000, 100000); err != nil {
		t.Fatal(err)
	}

	if _, err := initCache(dir, 600000, 600000, 65536); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path     string
		uid, gid uint32
	}{
		{pkg, 600000, 600000},
		{filepath.Join(pkg, "a-1-1-any.pkg.tar.zst"), 600000, 600000},
		{filepath.Join(pkg, "sub"), 600000, 600000},
		{filepath.Join(pkg, "sub", "b.part"), 601000, 601000},
		{filepath.Join(pkg, "root-owned"), 0, 0},
		{filepath.Join(pkg, "link"), 600000, 600000},
		{host, 0, 0},
	} {
		var st syscall.Stat_t
		if err := syscall.Lstat(c.path, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("%s: %d:%d, want %d:%d", c.path, st.Uid, st.Gid, c.uid, c.gid)
		}
	}
}
