package testkit

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

type fixture struct {
	t    *testing.T
	root string
}

func (f fixture) write(rel, body string) {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f fixture) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

// tarNames lists a layer's entries as "NAME TYPE [-> LINK]".
func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf("%s %c", h.Name, h.Typeflag)
		if h.Linkname != "" {
			s += " -> " + h.Linkname
		}
		out = append(out, s)
	}
}

func layerBytes(t *testing.T, before, after *tree, opaque map[string]bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := writeTreeLayer(tw, before, after, opaque); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestTreeLayers(t *testing.T) {
	f := fixture{t, t.TempDir()}
	f.write("a", "a")
	f.write("d/x", "x")
	f.write("d/y", "y")
	f.write("gone/sub/z", "z")
	f.write("r/old", "old")
	f.write("dev/null-like", "device nodes are not archived")
	f.must(os.Link(filepath.Join(f.root, "a"), filepath.Join(f.root, "d/hard")))
	f.must(os.Symlink("../a", filepath.Join(f.root, "d/sym")))

	s0, err := snapshotTree(f.root)
	f.must(err)
	full := tarNames(t, layerBytes(t, nil, s0, nil))
	wantFull := []string{
		"a 0", "d/ 5", "d/hard 1 -> a", "d/sym 2 -> ../a", "d/x 0", "d/y 0",
		"dev/ 5", "gone/ 5", "gone/sub/ 5", "gone/sub/z 0", "r/ 5", "r/old 0",
	}
	if diff := cmp.Diff(wantFull, full); diff != "" {
		t.Errorf("full layer (-want +got):\n%s", diff)
	}

	// Changes: delete a file and a whole directory, replace a directory,
	// change a file, add one.
	f.must(os.Remove(filepath.Join(f.root, "d/x")))
	f.must(os.RemoveAll(filepath.Join(f.root, "gone")))
	f.must(os.RemoveAll(filepath.Join(f.root, "r")))
	f.write("r/new", "new")
	f.write("d/y", "changed")
	f.write("n", "added")
	s1, err := snapshotTree(f.root)
	f.must(err)
	diffLayer := tarNames(t, layerBytes(t, s0, s1, map[string]bool{"r": true}))
	wantDiff := []string{
		".wh.gone 0",
		"d/ 5", ".wh.x 0", "d/y 0",
		"n 0",
		"r/ 5", "r/.wh..wh..opq 0", "r/new 0",
	}
	// Whiteouts are named in their directory.
	for i, s := range wantDiff {
		if s == ".wh.x 0" {
			wantDiff[i] = "d/.wh.x 0"
		}
	}
	sort.Strings(diffLayer)
	sort.Strings(wantDiff)
	if diff := cmp.Diff(wantDiff, diffLayer); diff != "" {
		t.Errorf("diff layer (-want +got):\n%s", diff)
	}
}

func TestTreeLayerKeepsOwnersModesXattrs(t *testing.T) {
	f := fixture{t, t.TempDir()}
	f.write("suid", "s")
	f.must(unix.Chmod(filepath.Join(f.root, "suid"), 0o4755))
	xattrOK := unix.Lsetxattr(filepath.Join(f.root, "suid"), "user.vagent.test", []byte("v"), 0) == nil
	if !xattrOK {
		t.Log("filesystem without user xattrs: not checking them")
	}
	if os.Geteuid() == 0 {
		f.must(os.Lchown(filepath.Join(f.root, "suid"), 1234, 5678))
		f.must(unix.Chmod(filepath.Join(f.root, "suid"), 0o4755)) // chown clears setuid
	}
	s, err := snapshotTree(f.root)
	f.must(err)
	tr := tar.NewReader(bytes.NewReader(layerBytes(t, nil, s, nil)))
	h, err := tr.Next()
	f.must(err)
	if h.Mode != 0o4755 {
		t.Errorf("mode %o, want 4755", h.Mode)
	}
	if h.Uname != "" || h.Gname != "" {
		t.Errorf("names %q/%q, want numeric ids only", h.Uname, h.Gname)
	}
	if os.Geteuid() == 0 && (h.Uid != 1234 || h.Gid != 5678) {
		t.Errorf("owner %d:%d, want 1234:5678", h.Uid, h.Gid)
	}
	if xattrOK && h.PAXRecords["SCHILY.xattr.user.vagent.test"] != "v" {
		t.Errorf("xattr lost: %v", h.PAXRecords)
	}
}

func TestWriteLayerMediaTypes(t *testing.T) {
	f := fixture{t, t.TempDir()}
	f.write("src/file", strings.Repeat("vagent ", 1000))
	s, err := snapshotTree(filepath.Join(f.root, "src"))
	f.must(err)
	var diffIDs []string
	for _, mt := range []types.MediaType{types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer} {
		t.Run(string(mt), func(t *testing.T) {
			p := filepath.Join(f.root, "blob-"+strings.ReplaceAll(string(mt), "/", "_"))
			l, err := writeLayer(p, mt, func(tw *tar.Writer) error { return writeTreeLayer(tw, nil, s, nil) })
			f.must(err)
			digest, err := l.Digest()
			f.must(err)
			diffID, err := l.DiffID()
			f.must(err)
			size, err := l.Size()
			f.must(err)
			blob, err := os.ReadFile(p)
			f.must(err)
			if got := fmt.Sprintf("sha256:%x", sha256.Sum256(blob)); got != digest.String() {
				t.Errorf("digest %s, blob hashes to %s", digest, got)
			}
			if size != int64(len(blob)) {
				t.Errorf("size %d, blob has %d", size, len(blob))
			}
			rc, err := l.Uncompressed()
			f.must(err)
			raw, err := io.ReadAll(rc)
			f.must(err)
			rc.Close()
			if got := fmt.Sprintf("sha256:%x", sha256.Sum256(raw)); got != diffID.String() {
				t.Errorf("diff id %s, content hashes to %s", diffID, got)
			}
			if mt == types.OCIUncompressedLayer && digest != diffID {
				t.Error("uncompressed layer: digest differs from diff id")
			}
			diffIDs = append(diffIDs, diffID.String())
		})
	}
	if len(diffIDs) == 3 && (diffIDs[0] != diffIDs[1] || diffIDs[1] != diffIDs[2]) {
		t.Errorf("same tree, different diff ids: %v", diffIDs)
	}
}

// TestRemoveTreeUnmountsFirst stands in for a crashed debootstrap that
// left the host's /dev bind-mounted in its target: removing the tree must
// not delete what the mount shows.
func TestRemoveTreeUnmountsFirst(t *testing.T) {
	RequireRoot(t)
	host := t.TempDir()
	sentinel := filepath.Join(host, "precious")
	if err := os.WriteFile(sentinel, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	tree := filepath.Join(base, "rootfs with space")
	for _, d := range []string{"dev", "proc/nested"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(host, filepath.Join(tree, "dev"), "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount not permitted here: %v", err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(tree, "proc"), "tmpfs", 0, ""); err != nil {
		_ = unix.Unmount(filepath.Join(tree, "dev"), unix.MNT_DETACH)
		t.Skipf("tmpfs mount not permitted here: %v", err)
	}
	t.Cleanup(func() { _ = unmountUnder(tree) })
	mps, err := mountsUnder(tree)
	if err != nil || len(mps) != 2 {
		t.Fatalf("mounts under %s: %v, %v", tree, mps, err)
	}
	// Through a symlink: mountinfo shows resolved paths.
	alias := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(base, alias); err != nil {
		t.Fatal(err)
	}
	if err := removeTree(filepath.Join(alias, "rootfs with space")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tree); !os.IsNotExist(err) {
		t.Errorf("tree still there: %v", err)
	}
	if b, err := os.ReadFile(sentinel); err != nil || string(b) != "keep" {
		t.Fatalf("file behind the bind mount deleted: %v", err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:            "/plain",
		`/a\040b`:           "/a b",
		`/tab\011x\134y`:    "/tab\tx\\y",
		`/trailing\04`:      `/trailing\04`,
		`/not\999octal\040`: `/not\999octal `,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
