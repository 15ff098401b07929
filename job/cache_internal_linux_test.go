package job

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/poll"
)

// newCacheRunner returns a Runner with only what the cache code needs.
func newCacheRunner(t *testing.T, opts ...Option) *Runner {
	t.Helper()
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(o); err != nil {
			t.Fatal(err)
		}
	}
	b := &Runner{opts: o, dir: t.TempDir(), rootUID: os.Getuid(), rootGID: os.Getgid()}
	if err := b.prepareDir(); err != nil {
		t.Fatal(err)
	}
	return b
}

func lease(t *testing.T, b *Runner, j poll.Job) (*cacheLease, string) {
	t.Helper()
	var log bytes.Buffer
	l, err := b.leaseCache(j, &log)
	if err != nil {
		t.Fatal(err)
	}
	return l, log.String()
}

// TestLeaseCache checks which cache a build gets: its target's, the same
// for the next build of the target and another for another target; a
// private one, removed after the build, while another build holds the
// target's or when the caches are off.
func TestLeaseCache(t *testing.T) {
	b := newCacheRunner(t)
	a1, log := lease(t, b, poll.Job{TargetID: 7})
	if want := filepath.Join(b.dir, "pacman-cache", targetsDir, "7", cacheTree); a1.tree != want || log != "" {
		t.Errorf("target 7's cache: %s (log %q), want %s", a1.tree, log, want)
	}
	// The same target at the same time: a private cache, said in the log.
	a2, log := lease(t, b, poll.Job{TargetID: 7})
	if a2.tree == a1.tree || filepath.Dir(filepath.Dir(a2.tree)) != b.runsDir() || !strings.Contains(log, "private") {
		t.Errorf("second build of target 7: %s (log %q), want a private cache under %s", a2.tree, log, b.runsDir())
	}
	// Another target: its own.
	c, _ := lease(t, b, poll.Job{TargetID: 8})
	if c.tree == a1.tree || filepath.Base(filepath.Dir(c.tree)) != "8" {
		t.Errorf("target 8's cache: %s", c.tree)
	}
	a2.release()
	if _, err := os.Stat(filepath.Dir(a2.tree)); !os.IsNotExist(err) {
		t.Errorf("private cache %s still there after the build: %v", a2.tree, err)
	}
	if err := os.WriteFile(filepath.Join(a1.tree, "dep-1-1-any.pkg.tar.zst"), []byte("pkg"), 0o644); err != nil {
		t.Fatal(err)
	}
	a1.release()
	c.release()
	a3, log := lease(t, b, poll.Job{TargetID: 7})
	defer a3.release()
	if a3.tree != a1.tree || log != "" {
		t.Errorf("next build of target 7: %s (log %q), want %s", a3.tree, log, a1.tree)
	}
	if _, err := os.Stat(filepath.Join(a3.tree, "dep-1-1-any.pkg.tar.zst")); err != nil {
		t.Errorf("the next build of the target does not find what the first downloaded: %v", err)
	}

	// Off: a private cache for every build.
	off := newCacheRunner(t, WithCacheDir(""))
	p, _ := lease(t, off, poll.Job{TargetID: 7})
	if filepath.Dir(filepath.Dir(p.tree)) != off.runsDir() {
		t.Errorf("cache with the caches off: %s, want a private one", p.tree)
	}
	p.release()
	if _, err := os.Stat(p.tree); !os.IsNotExist(err) {
		t.Errorf("private cache still there: %v", err)
	}
	if err := WithCacheDir("relative/dir")(defaultOptions()); err == nil {
		t.Error("WithCacheDir accepted a relative path")
	}
	if err := WithCacheMaxSize(-1)(defaultOptions()); err == nil {
		t.Error("WithCacheMaxSize accepted a negative size")
	}
}

// TestCacheKey: a target's id, or for a job without one a hash of its
// source that differs with any of its parts.
func TestCacheKey(t *testing.T) {
	base := poll.Job{Kind: "dir", URL: "file:///src/a", Path: "pkg"}
	keys := map[string]poll.Job{}
	for _, j := range []poll.Job{
		base,
		{Kind: "dir", URL: "file:///src/b", Path: "pkg"},
		{Kind: "git", URL: "file:///src/a", Path: "pkg"},
		{Kind: "dir", URL: "file:///src/a", Path: "pkg", Branch: "x"},
		{Kind: "dir", URL: "file:///src/a"},
		{TargetID: 12, Kind: "git", URL: "https://example.com/x"},
	} {
		k := cacheKey(j)
		if other, ok := keys[k]; ok {
			t.Errorf("%+v and %+v share the cache key %s", j, other, k)
		}
		keys[k] = j
		if strings.ContainsAny(k, "/.") || k == "" {
			t.Errorf("key %q is not a plain name", k)
		}
	}
	if k := cacheKey(poll.Job{TargetID: 12}); k != "12" {
		t.Errorf("key of target 12: %q", k)
	}
	if cacheKey(poll.Job{Kind: "dir", URL: "file:///src/a", Path: "pkg"}) != cacheKey(base) {
		t.Error("the key of a source changes")
	}
}

// TestCacheLayout checks the modes and owners of a package cache: the
// directories private to root, the tree builds see owned by the mapped
// root, so that nothing a build writes there is reachable by a host user;
// the lock beside the tree, never in it.
func TestCacheLayout(t *testing.T) {
	testkit.RequireRoot(t)
	b := newCacheRunner(t)
	b.rootUID, b.rootGID = 100000, 100001
	l, _ := lease(t, b, poll.Job{TargetID: 3})
	defer l.release()
	top := b.cacheDir()
	for _, c := range []struct {
		path     string
		mode     os.FileMode
		uid, gid uint32
		dir      bool
	}{
		{top, 0o700, 0, 0, true},
		{filepath.Join(top, targetsDir), 0o700, 0, 0, true},
		{filepath.Dir(l.tree), 0o700, 0, 0, true},
		{filepath.Join(filepath.Dir(l.tree), lockName), 0o600, 0, 0, false},
		{l.tree, 0o755, 100000, 100001, true},
	} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.IsDir() != c.dir || fi.Mode().Perm() != c.mode || st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d (directory %v)", c.path, fi.Mode(), st.Uid, st.Gid, c.mode, c.uid, c.gid, c.dir)
		}
	}
	if ents, _ := os.ReadDir(l.tree); len(ents) != 0 {
		t.Errorf("the tree builds see holds %v", ents)
	}
}

// TestOldSharedCacheRemoved: the one tree every build shared in earlier
// versions (<cache dir>/pkg and its lock) goes at the next start; another
// pkg/ stays.
func TestOldSharedCacheRemoved(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "pacman-cache")
	if err := os.MkdirAll(filepath.Join(cache, cacheTree), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{".vagent.lock", "dep-1-1-any.pkg.tar.zst"} {
		if err := os.WriteFile(filepath.Join(cache, cacheTree, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := &Runner{opts: defaultOptions(), dir: dir, rootUID: os.Getuid(), rootGID: os.Getgid()}
	if err := b.prepareDir(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(cache, cacheTree)); !os.IsNotExist(err) {
		t.Errorf("the shared tree of an earlier version is still there: %v", err)
	}
	// A pkg/ without the old lock is not ours (pacman_cache.dir may name a
	// directory with a pkg/ of its own): it stays.
	theirs := filepath.Join(t.TempDir(), "cache")
	if err := os.MkdirAll(filepath.Join(theirs, cacheTree), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(theirs, cacheTree, "glibc-2.40-1-x86_64.pkg.tar.zst"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b = &Runner{opts: defaultOptions(), dir: t.TempDir(), rootUID: os.Getuid(), rootGID: os.Getgid()}
	b.opts.cacheDir, b.opts.cacheSet = theirs, true
	if err := b.prepareDir(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(theirs, cacheTree, "glibc-2.40-1-x86_64.pkg.tar.zst")); err != nil {
		t.Errorf("a pkg/ that was not the agent's was removed: %v", err)
	}
}

// TestCacheCleaned: what a build leaves in its cache that is not a regular
// file — a symbolic link to a host path, a FIFO, a directory with a link
// inside, a socket — is removed after the build without following or
// opening it; regular files (hard links included) stay.
func TestCacheCleaned(t *testing.T) {
	b := newCacheRunner(t)
	l, _ := lease(t, b, poll.Job{TargetID: 1})
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("host file"), 0o644); err != nil {
		t.Fatal(err)
	}
	tree := l.tree
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(tree, "dep-1-1-any.pkg.tar.zst"), []byte("pkg"), 0o644))
	must(os.Link(filepath.Join(tree, "dep-1-1-any.pkg.tar.zst"), filepath.Join(tree, "hard.pkg.tar.zst")))
	must(os.Symlink(victim, filepath.Join(tree, "link.pkg.tar.zst")))
	must(os.Symlink(outside, filepath.Join(tree, "dirlink")))
	must(unix.Mkfifo(filepath.Join(tree, "fifo.pkg.tar.zst"), 0o666))
	must(os.MkdirAll(filepath.Join(tree, "download-x", "sub"), 0o755))
	must(os.Symlink(victim, filepath.Join(tree, "download-x", "sub", "link")))
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must(err)
	must(unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(tree, "sock")}))
	unix.Close(fd)

	done := make(chan struct{})
	go func() { l.release(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("release blocked on what the build left")
	}
	var names []string
	ents, err := os.ReadDir(tree)
	must(err)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "dep-1-1-any.pkg.tar.zst hard.pkg.tar.zst" {
		t.Errorf("cache after the build: %v, want the two regular files only", names)
	}
	if data, err := os.ReadFile(victim); err != nil || string(data) != "host file" {
		t.Errorf("the link's target: %q, %v", data, err)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("the linked directory went: %v", err)
	}
}

// TestCachePrune: after a build the caches together fit their bound: the
// least recently used targets (by when a build last took them, which no
// build can change) go whole, a target in use stays, and a target larger
// than the bound on its own loses its oldest files.
func TestCachePrune(t *testing.T) {
	const mib = 1 << 20
	b := newCacheRunner(t, WithCacheMaxSize(12*mib))
	fill := func(tree, name string, size int, age time.Duration) {
		t.Helper()
		p := filepath.Join(tree, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{'x'}, size), 0o644); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-age)
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
	}
	stamp := func(key string, age time.Duration) {
		t.Helper()
		when := time.Now().Add(-age)
		if err := os.Chtimes(filepath.Join(b.cacheDir(), targetsDir, key, lockName), when, when); err != nil {
			t.Fatal(err)
		}
	}
	// Targets 1 (used 3 h ago), 2 (2 h), 3 (1 h, in use now), 4 MiB each.
	for i, key := range []int{1, 2, 3} {
		l, _ := lease(t, b, poll.Job{TargetID: key})
		fill(l.tree, "dep.pkg.tar.zst", 4*mib, 0)
		// A build's file times are its own: target 1 claims its file is
		// new, which changes nothing.
		l.release()
		stamp(cacheKeyOf(key), time.Duration(3-i)*time.Hour)
	}
	in, _ := lease(t, b, poll.Job{TargetID: 3})
	defer in.release()
	stamp("3", 3*time.Hour+time.Minute) // oldest, but in use
	// Target 4 downloads 3 MiB: 15 MiB in all, over 12.
	l4, _ := lease(t, b, poll.Job{TargetID: 4})
	fill(l4.tree, "new.pkg.tar.zst", 3*mib, 0)
	l4.release()
	exists := func(key string) bool {
		_, err := os.Stat(filepath.Join(b.cacheDir(), targetsDir, key))
		return err == nil
	}
	if exists("1") || !exists("2") || !exists("3") || !exists("4") {
		t.Errorf("after target 4's build: 1 %v, 2 %v, 3 %v, 4 %v; want target 1 (least recently used, not in use) gone only",
			exists("1"), exists("2"), exists("3"), exists("4"))
	}

	// Target 4 alone downloads more than the bound: its oldest files go,
	// by their own times (they only order its own files).
	l4, _ = lease(t, b, poll.Job{TargetID: 4})
	fill(l4.tree, "old.pkg.tar.zst", 6*mib, 2*time.Hour)
	fill(l4.tree, "newer.pkg.tar.zst", 6*mib, time.Hour)
	l4.release()
	if exists("2") {
		t.Error("target 2 survived a prune that needed its space")
	}
	ents, _ := os.ReadDir(filepath.Join(b.cacheDir(), targetsDir, "4", cacheTree))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "new.pkg.tar.zst" {
		t.Errorf("target 4 keeps %v, want its newest file only", names)
	}
	if !exists("3") {
		t.Error("the cache of a target in use was removed")
	}
}

func cacheKeyOf(id int) string { return cacheKey(poll.Job{TargetID: id}) }

// TestCacheOfAnotherRange: when the data dir's id range changes (vagent
// picked a free range for a data dir of the old default 100000, or
// id_range changed), a target's cache that builds of the old range wrote
// is emptied when it is next leased (its files belong to ids no build has
// any more), without following a link in it; a tree a build of this range
// gave to its builder user is kept.
func TestCacheOfAnotherRange(t *testing.T) {
	testkit.RequireRoot(t)
	b := newCacheRunner(t, WithSourceCache(true))
	b.rootUID, b.rootGID, b.idSize = 100000, 100000, 65536
	l, _ := lease(t, b, poll.Job{TargetID: 9})
	pkg, src := l.tree, l.src
	l.release()
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
	// The builder user's source tree (build.sh gives it to builder).
	if err := os.Chown(src, 101000, 101000); err != nil {
		t.Fatal(err)
	}
	mustWrite(filepath.Join(src, "data.tar.gz"), 101000, 101000)
	mustWrite(filepath.Join(pkg, "a-1-1-any.pkg.tar.zst"), 100000, 100000)

	// The same range: everything stays.
	l2, _ := lease(t, b, poll.Job{TargetID: 9})
	l2.release()
	for _, p := range []string{filepath.Join(src, "data.tar.gz"), filepath.Join(pkg, "a-1-1-any.pkg.tar.zst")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the same range's %s went: %v", p, err)
		}
	}
	if err := os.Symlink(host, filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(src, 101000, 101000); err != nil {
		t.Fatal(err)
	}

	// Another range: both trees are emptied and the new root's.
	b.rootUID, b.rootGID = 600000, 600000
	l3, _ := lease(t, b, poll.Job{TargetID: 9})
	defer l3.release()
	if l3.tree != pkg || l3.src != src {
		t.Fatalf("lease %s %s, want the target's %s %s", l3.tree, l3.src, pkg, src)
	}
	for _, dir := range []string{pkg, src} {
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != 0 {
			t.Errorf("%s after the range changed: %v %v, want empty", dir, ents, err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil || st.Uid != 600000 || st.Gid != 600000 {
			t.Errorf("%s: %d:%d %v, want the new root's 600000", dir, st.Uid, st.Gid, err)
		}
	}
	if _, err := os.Stat(host); err != nil {
		t.Errorf("the link's target went: %v", err)
	}
}

// TestSourceCache: with WithSourceCache a target's cache has a source
// tree beside its packages, the build's to write; what is neither a file
// nor a directory is removed at any depth after the build; the trees
// count towards the bound, and a prune removes the oldest entries
// (mirrors whole) of the target just built when it alone is too large.
// Without the option, or in a private cache, there is none.
func TestSourceCache(t *testing.T) {
	const mib = 1 << 20
	if l, _ := lease(t, newCacheRunner(t), poll.Job{TargetID: 5}); l.src != "" {
		t.Errorf("a source tree without WithSourceCache: %s", l.src)
	}
	b := newCacheRunner(t, WithSourceCache(true), WithCacheMaxSize(12*mib))
	l, _ := lease(t, b, poll.Job{TargetID: 5})
	if want := filepath.Join(b.cacheDir(), targetsDir, "5", sourceTree); l.src != want {
		t.Fatalf("source tree %q, want %s", l.src, want)
	}
	if private, _ := lease(t, b, poll.Job{TargetID: 5}); private.src != "" {
		t.Errorf("a private cache has a source tree: %s", private.src)
	} else {
		private.release()
	}
	write := func(p string, size int, age time.Duration) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{'s'}, size), 0o644); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-age)
		for _, q := range []string{p, filepath.Dir(p)} {
			if err := os.Chtimes(q, when, when); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(filepath.Join(l.src, "data.tar.gz"), 1024, 0)
	write(filepath.Join(l.src, "mirror", "objects", "pack"), 1024, 0)
	if err := os.Symlink("/etc", filepath.Join(l.src, "mirror", "objects", "escape")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(l.src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	l.release()
	for p, want := range map[string]bool{"data.tar.gz": true, "mirror/objects/pack": true, "mirror/objects/escape": false, "fifo": false} {
		if _, err := os.Lstat(filepath.Join(l.src, p)); (err == nil) != want {
			t.Errorf("%s after the build: %v, want kept %v", p, err, want)
		}
	}
	// Target 6 alone goes over the bound with its sources: target 5 goes
	// whole, then 6's oldest mirror.
	l6, _ := lease(t, b, poll.Job{TargetID: 6})
	write(filepath.Join(l6.src, "old-mirror", "objects", "pack"), 10*mib, 2*time.Hour)
	write(filepath.Join(l6.src, "new.tar.gz"), 4*mib, 0)
	l6.release()
	if _, err := os.Stat(filepath.Join(b.cacheDir(), targetsDir, "5")); !os.IsNotExist(err) {
		t.Errorf("target 5 survived a prune that needed its space: %v", err)
	}
	ents, _ := os.ReadDir(l6.src)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "new.tar.gz" {
		t.Errorf("target 6's sources after the prune: %v, want the newest only", names)
	}
}
