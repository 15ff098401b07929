package oci

import (
	"archive/tar"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// sandboxDirs makes a parent holding the target root and an "outside"
// directory with a canary file, which no layer may touch.
func sandboxDirs(t testing.TB) (root, outside string) {
	t.Helper()
	parent := t.TempDir()
	root = filepath.Join(parent, "root")
	outside = filepath.Join(parent, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "canary"), []byte("canary"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, outside
}

// checkOutside fails if anything outside the root changed.
func checkOutside(t testing.TB, root, outside string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Dir(root))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "root" && e.Name() != "outside" {
			t.Errorf("created outside the root: %s", e.Name())
		}
	}
	ents, err = os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "canary" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("outside dir changed: %v", names)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "canary")); err != nil || string(b) != "canary" {
		t.Errorf("canary changed: %q %v", b, err)
	}
}

// unpackTars applies uncompressed layer tars with Unpack.
func unpackTars(t testing.TB, root string, opts []UnpackOption, layers ...[]tent) error {
	t.Helper()
	var ls []v1.Layer
	for _, l := range layers {
		ls = append(ls, layerOf(t, "none", l...))
	}
	return Unpack(t.Context(), imageOf(t, ls...), root, opts...)
}

func mustUnpack(t testing.TB, opts []UnpackOption, layers ...[]tent) string {
	t.Helper()
	root, outside := sandboxDirs(t)
	if err := unpackTars(t, root, opts, layers...); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	checkOutside(t, root, outside)
	return root
}

func exists(t testing.TB, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lstat(t testing.TB, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, xattrs in the security namespace, device nodes); CI runs as root")
	}
}

func TestWhiteouts(t *testing.T) {
	tests := []struct {
		name    string
		layers  [][]tent
		present []string
		absent  []string
	}{{
		name: "whiteout file",
		layers: [][]tent{
			{dir("a"), file("a/b", "b"), file("a/c", "c")},
			{file("a/.wh.b", "")},
		},
		present: []string{"a/c"},
		absent:  []string{"a/b", "a/.wh.b"},
	}, {
		name: "whiteout directory removes its tree",
		layers: [][]tent{
			{dir("a"), dir("a/d"), dir("a/d/e"), file("a/d/e/f", "f"), symlink("a/d/l", "/etc")},
			{file("a/.wh.d", "")},
		},
		present: []string{"a"},
		absent:  []string{"a/d"},
	}, {
		name: "whiteout of a missing name is a no-op",
		layers: [][]tent{
			{file("x", "x")},
			{file("nodir/.wh.y", ""), file(".wh.z", "")},
		},
		present: []string{"x"},
		absent:  []string{"nodir/.wh.y", ".wh.z"},
	}, {
		name: "whiteout in the same layer spares entries of that layer",
		layers: [][]tent{
			{file("a", "old")},
			{file("b", "new"), file(".wh.b", ""), file(".wh.a", "")},
		},
		present: []string{"b"},
		absent:  []string{"a"},
	}, {
		name: "opaque marker before the layer's entries",
		layers: [][]tent{
			{dir("d"), file("d/old1", ""), dir("d/sub"), file("d/sub/old2", "")},
			{dir("d"), file("d/.wh..wh..opq", ""), file("d/new", "")},
		},
		present: []string{"d", "d/new"},
		absent:  []string{"d/old1", "d/sub", "d/.wh..wh..opq"},
	}, {
		name: "opaque marker after the layer's entries applies to lower layers only",
		layers: [][]tent{
			{dir("d"), file("d/old1", ""), dir("d/sub"), file("d/sub/old2", ""), file("d/sub/keep-not", "")},
			{dir("d"), file("d/new", ""), dir("d/sub"), file("d/sub/new2", ""), file("d/.wh..wh..opq", ""), file("d/later", "")},
		},
		present: []string{"d/new", "d/sub", "d/sub/new2", "d/later"},
		absent:  []string{"d/old1", "d/sub/old2", "d/sub/keep-not"},
	}, {
		name: "opaque marker in a new directory",
		layers: [][]tent{
			{file("x", "")},
			{file("n/.wh..wh..opq", ""), file("n/y", "")},
		},
		present: []string{"x", "n/y"},
	}, {
		name: "opaque marker does not touch siblings",
		layers: [][]tent{
			{dir("d"), file("d/x", ""), dir("e"), file("e/y", "")},
			{file("d/.wh..wh..opq", "")},
		},
		present: []string{"d", "e/y"},
		absent:  []string{"d/x"},
	}, {
		name: "other aufs metadata is ignored",
		layers: [][]tent{
			{file(".wh..wh.plnk/1234.5678", ""), file(".wh..wh.aufs", ""), file("ok", "")},
		},
		present: []string{"ok"},
		absent:  []string{".wh..wh.aufs"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := mustUnpack(t, nil, tt.layers...)
			for _, p := range tt.present {
				if !exists(t, filepath.Join(root, p)) {
					t.Errorf("%s missing", p)
				}
			}
			for _, p := range tt.absent {
				if exists(t, filepath.Join(root, p)) {
					t.Errorf("%s present", p)
				}
			}
		})
	}
}

func TestLinks(t *testing.T) {
	root := mustUnpack(t, nil,
		[]tent{
			dir("usr"), dir("usr/bin"), file("usr/bin/tool", "tool"),
			symlink("bin", "usr/bin"),
			symlink("abs", "/usr/bin/tool"),
			symlink("dangling", "/does/not/exist"),
			symlink("up", "../../../../etc/passwd"),
			hardlink("usr/bin/tool2", "usr/bin/tool"),
			file("to-replace", "x"),
		},
		[]tent{
			hardlink("usr/bin/tool3", "usr/bin/tool"), // to a file of an earlier layer
			hardlink("tool4", "./usr/bin/tool2"),
			hardlink("to-replace", "usr/bin/tool"),
			file("bin/via-symlink", "through a relative symlink"),
			hardlink("abs-link", "abs"), // a hardlink to a symlink links the symlink
		},
	)
	for link, want := range map[string]string{"bin": "usr/bin", "abs": "/usr/bin/tool", "dangling": "/does/not/exist", "up": "../../../../etc/passwd", "abs-link": "/usr/bin/tool"} {
		got, err := os.Readlink(filepath.Join(root, link))
		if err != nil || got != want {
			t.Errorf("readlink %s = %q, %v; want %q", link, got, err, want)
		}
	}
	ino := lstat(t, filepath.Join(root, "usr/bin/tool")).Ino
	for _, p := range []string{"usr/bin/tool2", "usr/bin/tool3", "tool4", "to-replace"} {
		if got := lstat(t, filepath.Join(root, p)).Ino; got != ino {
			t.Errorf("%s: inode %d, want %d (a hardlink of usr/bin/tool)", p, got, ino)
		}
	}
	if n := lstat(t, filepath.Join(root, "usr/bin/tool")).Nlink; n != 5 {
		t.Errorf("nlink = %d, want 5", n)
	}
	if got := readFile(t, filepath.Join(root, "usr/bin/via-symlink")); got != "through a relative symlink" {
		t.Errorf("via-symlink = %q", got)
	}
}

func TestReplaceEntries(t *testing.T) {
	root := mustUnpack(t, nil,
		[]tent{dir("a"), file("a/f", "f"), file("b", "b"), symlink("c", "/etc"), dir("d"), file("d/x", "x")},
		[]tent{file("a", "now a file"), dir("b"), file("b/in", "in"), file("c", "not a symlink"), symlink("d", "a")},
	)
	if got := readFile(t, filepath.Join(root, "a")); got != "now a file" {
		t.Errorf("a = %q", got)
	}
	if got := readFile(t, filepath.Join(root, "b/in")); got != "in" {
		t.Errorf("b/in = %q", got)
	}
	if st := lstat(t, filepath.Join(root, "c")); st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Errorf("c is not a regular file: %o", st.Mode)
	}
	if got, _ := os.Readlink(filepath.Join(root, "d")); got != "a" {
		t.Errorf("d -> %q", got)
	}
}

func TestModesOwnersTimes(t *testing.T) {
	requireRoot(t)
	dirTime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	fileTime := time.Date(2011, 2, 3, 4, 5, 6, 700, time.UTC)
	linkTime := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
	// Files are created with their mode less the umask, and owned by
	// root: the extractor skips the fchmod and fchown that would change
	// nothing, so these cases check it does not skip one that would.
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	root := mustUnpack(t, nil, []tent{
		{name: "d", typ: tar.TypeDir, mode: 0o1777, uid: 0, gid: 0, mtime: dirTime},
		{name: "d/suid", typ: tar.TypeReg, mode: 0o4755, uid: 0, gid: 0, body: "x", mtime: fileTime},
		{name: "d/sgid", typ: tar.TypeReg, mode: 0o2755, uid: 1000, gid: 50, body: "x", mtime: fileTime},
		{name: "d/owned", typ: tar.TypeReg, mode: 0o600, uid: 12345, gid: 54321, body: "x", mtime: fileTime},
		{name: "d/sgiddir", typ: tar.TypeDir, mode: 0o2775, uid: 7, gid: 8, mtime: dirTime},
		{name: "d/sgiddir/f", typ: tar.TypeReg, mode: 0o644, body: "y"},
		{name: "d/link", typ: tar.TypeSymlink, link: "suid", mode: 0o777, uid: 33, gid: 44, mtime: linkTime},
		{name: "d/fifo", typ: tar.TypeFifo, mode: 0o640, uid: 5, gid: 6, mtime: fileTime},
		{name: "ro", typ: tar.TypeDir, mode: 0o555, mtime: dirTime},
		{name: "ro/f", typ: tar.TypeReg, mode: 0o444, body: "z"},
	}, []tent{
		// The same directories again (so that their times are set
		// after this layer's files).
		{name: "d", typ: tar.TypeDir, mode: 0o1777, uid: 0, gid: 0, mtime: dirTime},
		{name: "d/sgiddir", typ: tar.TypeDir, mode: 0o2775, uid: 7, gid: 8, mtime: dirTime},
		// Made in a setgid directory, which gives them its group.
		{name: "d/sgiddir/g", typ: tar.TypeReg, mode: 0o644, body: "g", mtime: fileTime},
		{name: "d/sgiddir/h", typ: tar.TypeReg, mode: 0o664, gid: 8, body: "h", mtime: fileTime},
		// Bits the umask takes.
		{name: "ww", typ: tar.TypeReg, mode: 0o666, body: "w", mtime: fileTime},
		{name: "d/gx", typ: tar.TypeReg, mode: 0o2070, gid: 9, body: "w", mtime: fileTime},
	})
	for _, c := range []struct {
		p        string
		mode     uint32 // type and permission bits
		uid, gid uint32
		mtime    time.Time
	}{
		{"d", syscall.S_IFDIR | 0o1777, 0, 0, dirTime},
		{"d/suid", syscall.S_IFREG | 0o4755, 0, 0, fileTime},
		{"d/sgid", syscall.S_IFREG | 0o2755, 1000, 50, fileTime},
		{"d/owned", syscall.S_IFREG | 0o600, 12345, 54321, fileTime},
		{"d/sgiddir", syscall.S_IFDIR | 0o2775, 7, 8, dirTime},
		{"d/link", syscall.S_IFLNK | 0o777, 33, 44, linkTime},
		{"d/fifo", syscall.S_IFIFO | 0o640, 5, 6, fileTime},
		{"ro", syscall.S_IFDIR | 0o555, 0, 0, dirTime},
		{"ro/f", syscall.S_IFREG | 0o444, 0, 0, testTime},
		{"d/sgiddir/g", syscall.S_IFREG | 0o644, 0, 0, fileTime},
		{"d/sgiddir/h", syscall.S_IFREG | 0o664, 0, 8, fileTime},
		{"ww", syscall.S_IFREG | 0o666, 0, 0, fileTime},
		{"d/gx", syscall.S_IFREG | 0o2070, 0, 9, fileTime},
	} {
		st := lstat(t, filepath.Join(root, c.p))
		if st.Mode != c.mode || st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("%s: mode %o owner %d:%d, want %o %d:%d", c.p, st.Mode, st.Uid, st.Gid, c.mode, c.uid, c.gid)
		}
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(c.mtime) {
			t.Errorf("%s: mtime %v, want %v", c.p, got.UTC(), c.mtime)
		}
	}
}

func TestDirectoryMtimeAcrossLayers(t *testing.T) {
	// A directory's mtime is set after its contents, in the layer that
	// lists it.
	t1 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	t2 := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	root := mustUnpack(t, nil,
		[]tent{{name: "d", typ: tar.TypeDir, mode: 0o755, mtime: t1}, file("d/a", "")},
		[]tent{{name: "d", typ: tar.TypeDir, mode: 0o700, mtime: t2}, file("d/b", ""), file("d/.wh.a", "")},
	)
	st := lstat(t, filepath.Join(root, "d"))
	if got := time.Unix(st.Mtim.Unix()); !got.Equal(t2) {
		t.Errorf("d: mtime %v, want %v", got.UTC(), t2)
	}
	if st.Mode&0o7777 != 0o700 {
		t.Errorf("d: mode %o, want 700 (the upper layer's)", st.Mode&0o7777)
	}
}

func TestXattrs(t *testing.T) {
	requireRoot(t)
	// security.capability v2 for cap_net_bind_service (bit 10), effective.
	capV2 := string([]byte{0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	root := mustUnpack(t, nil, []tent{
		{name: "bin", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"user.dir": "d"}},
		{name: "bin/ping", typ: tar.TypeReg, mode: 0o755, uid: 0, gid: 0, body: "elf", xattrs: map[string]string{
			"security.capability":    capV2,
			"user.note":              "hello",
			"trusted.overlay.opaque": "y", // dropped: steers overlayfs
		}},
	})
	get := func(p, attr string) (string, error) {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(filepath.Join(root, p), attr, buf)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	if v, err := get("bin/ping", "security.capability"); err != nil || v != capV2 {
		t.Errorf("security.capability = %x, %v", v, err)
	}
	if v, err := get("bin/ping", "user.note"); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			t.Skip("file system without user xattrs")
		}
		t.Errorf("user.note: %v", err)
	} else if v != "hello" {
		t.Errorf("user.note = %q", v)
	}
	if v, err := get("bin", "user.dir"); err != nil || v != "d" {
		t.Errorf("dir user.dir = %q, %v", v, err)
	}
	if _, err := get("bin/ping", "trusted.overlay.opaque"); err == nil {
		t.Errorf("trusted.overlay.opaque was set")
	}
}

func TestIDShift(t *testing.T) {
	requireRoot(t)
	root := mustUnpack(t, []UnpackOption{WithIDShift(100000, 200000)}, []tent{
		{name: "f", typ: tar.TypeReg, uid: 0, gid: 0, body: "x", mode: 0o4755},
		{name: "g", typ: tar.TypeReg, uid: 1000, gid: 100, body: "x"},
		{name: "l", typ: tar.TypeSymlink, link: "f", uid: 5, gid: 6},
		file("implicit/parent/file", ""),
	})
	for p, want := range map[string][2]uint32{"f": {100000, 200000}, "g": {101000, 200100}, "l": {100005, 200006}, "implicit": {100000, 200000}, "implicit/parent/file": {100000, 200000}} {
		st := lstat(t, filepath.Join(root, p))
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, want[0], want[1])
		}
	}
	if st := lstat(t, filepath.Join(root, "f")); st.Mode&0o7777 != 0o4755 {
		t.Errorf("f: mode %o, setuid lost", st.Mode&0o7777)
	}
	// An id pushed past the 32-bit range is an error.
	root2, _ := sandboxDirs(t)
	err := unpackTars(t, root2, []UnpackOption{WithIDShift(1<<32-100, 0)}, []tent{{name: "x", typ: tar.TypeReg, uid: 1000}})
	if err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("shifted id out of range: err = %v", err)
	}
}

func TestDevices(t *testing.T) {
	requireRoot(t)
	null := tent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3}
	root := mustUnpack(t, []UnpackOption{WithDevices(true)}, []tent{dir("dev"), null})
	st := lstat(t, filepath.Join(root, "dev/null"))
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("dev/null: mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
}

// TestHostileEntries: every entry that could write outside the root (or
// create a device node when not permitted) fails the unpack with an error
// naming the layer and the entry, and nothing outside changes.
func TestHostileEntries(t *testing.T) {
	tests := []struct {
		name   string
		layers func(outside string) [][]tent
		entry  string // the entry the error must name
	}{
		{"dotdot", func(string) [][]tent { return [][]tent{{file("../escape", "x")}} }, "../escape"},
		{"dotdot inside", func(string) [][]tent { return [][]tent{{file("a/../../escape", "x")}} }, "a/../../escape"},
		{"dotdot to outside", func(string) [][]tent { return [][]tent{{file("../outside/canary", "pwned")}} }, "../outside/canary"},
		{"hardlink dotdot", func(string) [][]tent {
			return [][]tent{{hardlink("stolen", "../outside/canary")}}
		}, "stolen"},
		{"hardlink to the root", func(string) [][]tent { return [][]tent{{hardlink("r", ".")}} }, "\"r\""},
		{"device node", func(string) [][]tent {
			return [][]tent{{dir("dev"), {name: "dev/sda", typ: tar.TypeBlock, mode: 0o660, major: 8}}}
		}, "dev/sda"},
		{"char device", func(string) [][]tent {
			return [][]tent{{file("ok", ""), {name: "mem", typ: tar.TypeChar, mode: 0o660, major: 1, minor: 1}}}
		}, "mem"},
		{"whiteout of dotdot", func(string) [][]tent { return [][]tent{{dir("a")}, {file("a/.wh..", "")}} }, "a/.wh.."},
		{"whiteout of dotdot at the root", func(string) [][]tent { return [][]tent{{file(".wh..", "")}} }, ".wh.."},
		{"whiteout of dot", func(string) [][]tent { return [][]tent{{dir("d")}, {file("d/.wh..", "")}} }, "d/.wh.."},
		{"root replaced by a file", func(string) [][]tent { return [][]tent{{file(".", "")}} }, `"."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, outside := sandboxDirs(t)
			layers := tt.layers(outside)
			err := unpackTars(t, root, nil, layers...)
			if err == nil {
				t.Fatal("unpack succeeded")
			}
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Errorf("error %v is not ErrUnsafeEntry", err)
			}
			if !strings.Contains(err.Error(), "layer ") || !strings.Contains(err.Error(), "sha256:") || !strings.Contains(err.Error(), tt.entry) {
				t.Errorf("error %q does not name the layer and the entry %s", err, tt.entry)
			}
			checkOutside(t, root, outside)
		})
	}
}

// TestAbsoluteNamesConfined: an absolute entry name (or hardlink target)
// is a path in the image's root, as tar, umoci and go-containerregistry
// read it: it lands inside the root, and nothing outside changes.
func TestAbsoluteNamesConfined(t *testing.T) {
	root, outside := sandboxDirs(t)
	err := unpackTars(t, root, nil,
		[]tent{file("etc/gone", "lower"), file("keep", "keep")},
		[]tent{
			dir("/"),
			file(outside+"/canary", "pwned"),
			dir("/tmp"),
			file("/tmp/x", "x"),
			file("//usr///bin/../bin/tool", "tool"),
			file("/../../escape", "up from the root is the root"),
			hardlink("stolen", outside+"/canary"),
			hardlink("/tool-link", "/usr/bin/tool"),
			symlink("/abs-symlink", outside+"/canary"),
			file("/etc/.wh.gone", ""),
		},
	)
	if err != nil {
		t.Fatalf("unpack: %v", err)
	}
	checkOutside(t, root, outside)
	for p, want := range map[string]string{
		outside + "/canary": "pwned", // outside's path, inside the root
		"tmp/x":             "x",
		"usr/bin/tool":      "tool",
		"escape":            "up from the root is the root",
		"stolen":            "pwned",
		"tool-link":         "tool",
		"keep":              "keep",
	} {
		if got := readFile(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if a, b := lstat(t, filepath.Join(root, "stolen")).Ino, lstat(t, filepath.Join(root, outside, "canary")).Ino; a != b {
		t.Errorf("stolen is not a hardlink of the confined canary")
	}
	if got, _ := os.Readlink(filepath.Join(root, "abs-symlink")); got != outside+"/canary" {
		t.Errorf("abs-symlink -> %q (symlink targets are data, kept as they are)", got)
	}
	if exists(t, filepath.Join(root, "etc/gone")) {
		t.Errorf("absolute whiteout did not remove etc/gone")
	}
}

// TestHardlinkBeforeTarget: a hardlink listed before its target in the same
// layer is made at the layer's end; one whose target never appears fails
// the unpack, naming the entry.
func TestHardlinkBeforeTarget(t *testing.T) {
	root := mustUnpack(t, nil,
		[]tent{file("lower", "lower"), file("replaced", "old")},
		[]tent{
			hardlink("hl2/link-first", "hl2/target-later"),
			dir("hl2"),
			file("hl2/target-later", "t"),
			hardlink("chain1", "chain2"), // a link to a link that waits too
			hardlink("chain2", "/chain3"),
			file("chain3", "c"),
			hardlink("superseded", "nowhere"), // a later entry takes the name
			file("superseded", "own"),
			hardlink("replaced", "hl2/target-later"), // replaces a lower file
			hardlink("to-lower", "lower"),
		},
	)
	same := func(a, b string) {
		t.Helper()
		if lstat(t, filepath.Join(root, a)).Ino != lstat(t, filepath.Join(root, b)).Ino {
			t.Errorf("%s is not a hardlink of %s", a, b)
		}
	}
	same("hl2/link-first", "hl2/target-later")
	same("replaced", "hl2/target-later")
	same("chain1", "chain3")
	same("chain2", "chain3")
	same("to-lower", "lower")
	if got := readFile(t, filepath.Join(root, "superseded")); got != "own" {
		t.Errorf("superseded = %q, want the later entry's", got)
	}
	if n := lstat(t, filepath.Join(root, "hl2/target-later")).Nlink; n != 3 {
		t.Errorf("target-later nlink = %d, want 3", n)
	}

	for _, tt := range []struct {
		name  string
		layer []tent
		entry string
	}{
		{"target never appears", []tent{hardlink("l", "never"), file("other", "")}, `"l"`},
		{"target dir never appears", []tent{hardlink("l", "nodir/never")}, `"l"`},
		{"cycle", []tent{hardlink("p", "q"), hardlink("q", "p")}, `hardlink target`},
		{"target whited out below", []tent{file(".wh.lower", ""), hardlink("l", "lower")}, `"l"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root, outside := sandboxDirs(t)
			err := unpackTars(t, root, nil, []tent{file("lower", "lower")}, tt.layer)
			checkOutside(t, root, outside)
			if err == nil {
				t.Fatal("unpack succeeded")
			}
			if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "layer 2 of 2") || !strings.Contains(err.Error(), tt.entry) {
				t.Errorf("error %q: want a missing target, naming layer 2 and %s", err, tt.entry)
			}
		})
	}
}

// TestSymlinkEscapes: symlinks are resolved inside the root, the way the
// container will see them, so a symlink in the parent chain pointing
// outside (or at /) cannot lead a write outside.
func TestSymlinkEscapes(t *testing.T) {
	tests := []struct {
		name   string
		layers func(outside string) [][]tent
		inside []string // files that must exist in the root instead
	}{
		{"parent symlink to slash", func(string) [][]tent {
			return [][]tent{{symlink("evil", "/")}, {file("evil/pwned", "x")}}
		}, []string{"pwned"}},
		{"parent symlink to outside, absolute", func(o string) [][]tent {
			return [][]tent{{symlink("evil", o), dir("etc")}, {file("evil/canary", "pwned")}}
		}, nil},
		{"parent symlink with dotdots", func(string) [][]tent {
			return [][]tent{{symlink("evil", "../../../../../../outside")}, {file("evil/canary", "pwned")}}
		}, nil},
		{"parent symlink in the same layer", func(string) [][]tent {
			return [][]tent{{symlink("evil", "/"), file("evil/etc/pwned", "x")}}
		}, []string{"etc/pwned"}},
		{"nested parent symlinks", func(o string) [][]tent {
			return [][]tent{{dir("a"), symlink("a/b", "../c"), symlink("c", o)}, {file("a/b/canary", "pwned")}}
		}, nil},
		{"last component symlink is replaced, not followed", func(o string) [][]tent {
			return [][]tent{{symlink("link", o+"/canary")}, {file("link", "pwned")}}
		}, []string{"link"}},
		{"directory over a symlink is created, not followed", func(o string) [][]tent {
			return [][]tent{{symlink("d", o)}, {dir("d"), file("d/canary", "pwned")}}
		}, []string{"d/canary"}},
		{"hardlink through a parent symlink", func(o string) [][]tent {
			return [][]tent{{symlink("evil", o), file("in", "in")}, {hardlink("stolen", "evil/canary")}}
		}, nil},
		{"whiteout through a parent symlink", func(o string) [][]tent {
			return [][]tent{{symlink("evil", o)}, {file("evil/.wh.canary", "")}}
		}, nil},
		{"opaque through a parent symlink", func(o string) [][]tent {
			return [][]tent{{symlink("evil", o)}, {file("evil/.wh..wh..opq", "")}}
		}, nil},
		{"whiteout of a symlink to outside removes the symlink only", func(o string) [][]tent {
			return [][]tent{{symlink("evil", o)}, {file(".wh.evil", "")}}
		}, nil},
		{"opaque root via symlink to slash", func(string) [][]tent {
			return [][]tent{{symlink("evil", "/"), file("keep", "")}, {file("evil/.wh..wh..opq", "")}}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, outside := sandboxDirs(t)
			layers := tt.layers(outside)
			err := unpackTars(t, root, nil, layers...)
			checkOutside(t, root, outside)
			if err != nil {
				// Failing is fine (a dangling parent, say), writing
				// outside is not; but the error must name the entry.
				if !strings.Contains(err.Error(), "entry ") {
					t.Errorf("error %q does not name the entry", err)
				}
				return
			}
			for _, p := range tt.inside {
				if p == "" {
					continue
				}
				if !exists(t, filepath.Join(root, p)) {
					t.Errorf("%s missing in the root", p)
				}
			}
		})
	}
}

func mkdir(p string) error { return os.MkdirAll(p, 0o755) }

func mountTmpfs(dir, size string) error {
	return unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size)
}

func unmount(dir string) error { return unix.Unmount(dir, unix.MNT_DETACH) }
