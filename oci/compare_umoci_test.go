//go:build linux

package oci_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/oci"
)

// node is what the comparison checks of one path of a rootfs.
type node struct {
	Type   string // "file", "dir", "symlink", "char", "block", "fifo", "socket"
	Mode   string // permission bits with setuid, setgid and sticky, octal
	UID    uint32
	GID    uint32
	Link   string // symlink target
	SHA256 string // regular files
	Size   int64
	Rdev   uint64
	Mtime  int64 // seconds; directories excluded (see snapshotRootfs)
	Xattrs map[string]string
}

// snapshotRootfs describes every path under root, keyed by its path
// relative to root ("." for the root itself), and groups hardlinks: each
// group is the sorted paths sharing an inode.
func snapshotRootfs(t *testing.T, root string) (map[string]node, [][]string) {
	t.Helper()
	nodes := map[string]node{}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{
			Mode:  fmt.Sprintf("%04o", st.Mode&0o7777),
			UID:   st.Uid,
			GID:   st.Gid,
			Mtime: st.Mtim.Sec,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			n.Type, n.Size = "file", st.Size
			if n.SHA256, err = hashFile(p); err != nil {
				return err
			}
			if st.Nlink > 1 {
				inodes[st.Ino] = append(inodes[st.Ino], rel)
			}
		case unix.S_IFDIR:
			// A directory's mtime changes whenever an entry is added
			// below it, and both tools create entries after the
			// directory's own header: whether it is restored at the
			// end is an implementation detail, not image content.
			n.Type, n.Mtime = "dir", 0
		case unix.S_IFLNK:
			n.Type = "symlink"
			if n.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR:
			n.Type, n.Rdev = "char", st.Rdev
		case unix.S_IFBLK:
			n.Type, n.Rdev = "block", st.Rdev
		case unix.S_IFIFO:
			n.Type = "fifo"
		default:
			n.Type = "socket"
		}
		if n.Xattrs, err = listXattrs(p); err != nil {
			return err
		}
		nodes[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var groups [][]string
	for _, g := range inodes {
		if len(g) > 1 {
			sort.Strings(g)
			groups = append(groups, g)
		}
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i][0] < groups[j][0] })
	return nodes, groups
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func listXattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		v := make([]byte, 4096)
		n, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("%s: xattr %s: %w", p, name, err)
		}
		out[name] = string(v[:n])
	}
	return out, nil
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// umoci 0.4.7 (Debian 12) rejects zstd layers, so skopeo recompresses the
// image's small zstd layer (and compresses its uncompressed one) to gzip
// on the way: the tar streams, hence the trees, are unchanged; vagent reads
// the original media types from the registry.

// TestCompareWithUmoci flattens the multi-layer Arch-like image (three
// media types, whiteouts, an opaque directory, hardlinks, an xattr) with
// vagent and with the reference pair skopeo copy + umoci unpack, from the
// same local registry, and requires identical trees: paths, types, modes,
// owners, link targets, contents, file mtimes, xattrs and hardlink groups.
func TestCompareWithUmoci(t *testing.T) {
	testkit.RequireRoot(t) // umoci unpack without --rootless keeps owners
	skopeo := testkit.RequireTool(t, "skopeo", "skopeo")
	umoci := testkit.RequireTool(t, "umoci", "umoci")
	img, _ := testkit.ArchLike(t)
	reg := testkit.StartTestRegistry(t)
	ref := reg.Host() + "/test/archlike:" + testkit.ArchLikeTag
	if err := testkit.Push(t.Context(), img, ref); err != nil {
		t.Fatal(err)
	}

	store, err := oci.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rf, err := store.Rootfs(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rf.Release() })

	work := t.TempDir()
	layoutDir := filepath.Join(work, "layout")
	bundle := filepath.Join(work, "bundle")
	run(t, skopeo, "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", "--dest-compress-format=gzip",
		"docker://"+ref, "oci:"+layoutDir+":"+testkit.ArchLikeTag)
	run(t, umoci, "unpack", "--image", layoutDir+":"+testkit.ArchLikeTag, bundle)

	got, gotLinks := snapshotRootfs(t, rf.Dir)
	want, wantLinks := snapshotRootfs(t, filepath.Join(bundle, "rootfs"))
	if len(want) < 1000 {
		t.Fatalf("umoci's rootfs has only %d paths", len(want))
	}
	// Sanity: the features under test are really in this image.
	if _, ok := want["usr/share/man"]; ok {
		t.Error("usr/share/man present in umoci's rootfs: whiteouts not exercised")
	}
	if want["etc/makepkg.conf"].Xattrs[testkit.ArchLikeXattr] == "" {
		t.Errorf("umoci did not keep the %s xattr: check skipped", testkit.ArchLikeXattr)
	}
	if len(wantLinks) == 0 {
		t.Error("no hardlinks in umoci's rootfs: hardlinks not exercised")
	}

	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	var bad int
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		switch {
		case !gok:
			bad++
			if bad <= 40 {
				t.Errorf("%s: only in umoci's rootfs (%s)", p, w.Type)
			}
		case !wok:
			bad++
			if bad <= 40 {
				t.Errorf("%s: only in vagent's rootfs (%s)", p, g.Type)
			}
		default:
			if d := cmp.Diff(w, g); d != "" {
				bad++
				if bad <= 40 {
					t.Errorf("%s (-umoci +vagent):\n%s", p, d)
				}
			}
		}
	}
	if bad > 40 {
		t.Errorf("... %d differing paths in all", bad)
	}
	if d := cmp.Diff(wantLinks, gotLinks); d != "" {
		t.Errorf("hardlink groups (-umoci +vagent):\n%s", d)
	}
	t.Logf("compared %d paths, %d hardlink groups", len(want), len(wantLinks))

	// The flattened image is a working builder base: pacman and makepkg
	// run (chrooted into umoci's copy, which is ours to change: vagent's
	// rootfs stays read-only) and makepkg sees the fix-ups.
	root := filepath.Join(bundle, "rootfs")
	// A sandbox provides /dev; makepkg writes to /dev/null.
	if err := unix.Mknod(filepath.Join(root, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "dev/null"), 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"/usr/bin/pacman", "-Dk"}, // needs the initialised local database
		{"/usr/sbin/runuser", "-u", "builder", "--", "/usr/bin/makepkg", "--version"},
		{"/bin/bash", "-c", ". /etc/makepkg.conf && echo $PKGEXT"},
	} {
		cmd := exec.CommandContext(t.Context(), c[0], c[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("in the image: %s: %v\n%s", strings.Join(c, " "), err, out)
			continue
		}
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		t.Logf("in the image: %s: %s", strings.Join(c, " "), first)
		if strings.Contains(string(out), "denied") {
			t.Errorf("in the image: %s: %s", strings.Join(c, " "), out)
		}
		if c[0] == "/bin/bash" && strings.TrimSpace(string(out)) != ".pkg.tar.zst" {
			t.Errorf("PKGEXT %q in the image, want .pkg.tar.zst", out)
		}
	}
}

// TestSnapshotRootfsSeesDifferences keeps the comparison honest: every
// property it claims to compare must show up as a difference.
func TestSnapshotRootfsSeesDifferences(t *testing.T) {
	mk := func(t *testing.T) string {
		dir := t.TempDir()
		for _, f := range []string{"a", "b", "c", "d", "e"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("same"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("a", filepath.Join(dir, "l")); err != nil {
			t.Fatal(err)
		}
		ts := []unix.Timespec{{Sec: 1700000000}, {Sec: 1700000000}}
		for _, f := range []string{"a", "b", "c", "d", "e", "l"} {
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, f), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	base, _ := snapshotRootfs(t, mk(t))
	changes := map[string]func(dir string) error{
		"content": func(d string) error {
			return os.WriteFile(filepath.Join(d, "a"), []byte("diff"), 0o644) // same size
		},
		"mode":  func(d string) error { return unix.Chmod(filepath.Join(d, "b"), 0o4644) },
		"mtime": func(d string) error { return os.Chtimes(filepath.Join(d, "c"), time.Now(), time.Unix(1, 0)) },
		"link": func(d string) error {
			if err := os.Remove(filepath.Join(d, "l")); err != nil {
				return err
			}
			return os.Symlink("b", filepath.Join(d, "l"))
		},
		"type": func(d string) error {
			if err := os.Remove(filepath.Join(d, "d")); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(d, "d"), 0o644)
		},
		"xattr": func(d string) error {
			if err := unix.Lsetxattr(filepath.Join(d, "e"), "user.x", []byte("1"), 0); err != nil {
				t.Skipf("no user xattrs here: %v", err)
			}
			return nil
		},
		"owner": func(d string) error {
			if os.Geteuid() != 0 {
				t.Skip("chown needs root")
			}
			return os.Lchown(filepath.Join(d, "e"), 1, 2)
		},
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			dir := mk(t)
			if err := change(dir); err != nil {
				t.Fatal(err)
			}
			got, _ := snapshotRootfs(t, dir)
			if cmp.Equal(base, got) {
				t.Errorf("a %s change went unnoticed", name)
			}
		})
	}
	t.Run("hardlink", func(t *testing.T) {
		dir := mk(t)
		if err := os.Remove(filepath.Join(dir, "b")); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
			t.Fatal(err)
		}
		got, links := snapshotRootfs(t, dir)
		if !cmp.Equal(base, got) {
			t.Fatalf("a hardlink with the same content changed a node: %s", cmp.Diff(base, got))
		}
		if d := cmp.Diff([][]string{{"a", "b"}}, links); d != "" {
			t.Errorf("hardlink groups: %s", d)
		}
	})
}
