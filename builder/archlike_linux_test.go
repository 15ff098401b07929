package builder_test

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// node is what the tree comparisons check of one path.
type node struct {
	Type   string
	Mode   string
	UID    uint32
	GID    uint32
	Link   string
	SHA256 string
	Size   int64
	Mtime  int64 // files only: a directory's mtime follows its entries
	Xattrs map[string]string
}

// snapshot describes every path under root (relative, "." excluded).
func snapshot(t testing.TB, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{Mode: fmt.Sprintf("%04o", st.Mode&0o7777), UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Sec}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			n.Type, n.Size = "file", st.Size
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			n.SHA256 = hex.EncodeToString(h.Sum(nil))
		case unix.S_IFDIR:
			n.Type, n.Mtime = "dir", 0
		case unix.S_IFLNK:
			n.Type = "symlink"
			if n.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFIFO:
			n.Type = "fifo"
		default:
			n.Type = fmt.Sprintf("type %o", st.Mode&unix.S_IFMT)
		}
		names := make([]byte, 64<<10)
		if sz, err := unix.Llistxattr(p, names); err == nil && sz > 0 {
			n.Xattrs = map[string]string{}
			for _, name := range strings.Split(strings.TrimRight(string(names[:sz]), "\x00"), "\x00") {
				v := make([]byte, 64<<10)
				vn, err := unix.Lgetxattr(p, name, v)
				if err != nil {
					return err
				}
				n.Xattrs[name] = string(v[:vn])
			}
		}
		out[filepath.ToSlash(rel)] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// archRepo serves the setup packages from a Vieter test server: meta
// packages base-devel and git, the latter with an install scriptlet that
// deletes a file of the base and replaces a directory, as upgrades do.
func archRepo(t testing.TB) pacman.Repo {
	t.Helper()
	srv, ts := vieterserver.NewTest(t)
	install := "post_install() {\n\trm -f /etc/issue.net\n\trm -rf /etc/skel\n\tmkdir /etc/skel\n\techo vagent >/etc/skel/.vagent\n}\n"
	for _, p := range []struct {
		name  string
		files map[string]string
	}{
		{"base-devel", map[string]string{"usr/": "", "usr/share/": "", "usr/share/vagent-test/": "", "usr/share/vagent-test/base-devel": "meta package\n"}},
		{"git", map[string]string{"usr/": "", "usr/share/": "", "usr/share/vagent-test/": "", "usr/share/vagent-test/git": "meta package\n", ".INSTALL": install}},
	} {
		b, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: p.name, Version: "1.0-1", Arch: "any", Desc: "vagent test " + p.name}, p.files, vieterserver.Zstd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Publish("vagent", b); err != nil {
			t.Fatal(err)
		}
	}
	return pacman.Repo{Name: "vagent", Servers: []string{ts.URL + "/$repo/$arch"}, SigLevel: "Optional TrustAll"}
}

// TestArchLikeBuilder prepares a builder from the Arch-like image (real
// pacman 6.0.2 and makepkg) with packages from a local repository, and
// checks the builder, its layer and its image.
func TestArchLikeBuilder(t *testing.T) {
	t.Parallel() // the two Arch-like preparations overlap: each waits on pacman, the registry and the disk
	testkit.RequireRoot(t)
	arch, archDir := testkit.ArchLike(t)
	img := gzipLayers(t, arch, archDir)
	reg := startRegistry(t)
	base := reg.Host() + "/test/archlike:" + testkit.ArchLikeTag
	if err := testkit.Push(t.Context(), img, base); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, builder.WithRepos(archRepo(t)))
	ctx := t.Context()
	var log sandboxtest.Buffer
	l, err := e.m.Acquire(ctx, base, &log)
	if err != nil {
		t.Fatalf("Acquire: %v\n%s", err, log.String())
	}
	defer l.Release()
	for _, want := range []string{
		"pacman has no DisableSandbox option",
		":: Synchronizing package databases...",
		"installing base-devel",
		"installing git",
	} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("setup log lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("setup log:\n%s", log.String())
	}

	// The builder works: user, sudo, tools.
	for _, c := range []struct {
		uid  uint32
		args []string
		want string
	}{
		{1000, []string{"id", "-un"}, "builder"},
		{1000, []string{"id", "-gn"}, "builder"},
		{1000, []string{"id", "-u"}, "1000"},
		{1000, []string{"id", "-g"}, "1000"},
		{1000, []string{"stat", "-c", "%u:%g %U:%G", "/build"}, "1000:1000 builder:builder"},
		{1000, []string{"sudo", "-n", "true"}, ""},
		{1000, []string{"sudo", "-n", "id", "-u"}, "0"},
		{1000, []string{"makepkg", "--version"}, "makepkg (pacman) 6.0.2"},
		{1000, []string{"pacman", "-V"}, "Pacman v6.0.2"},
		{0, []string{"pacman", "-Q", "base-devel", "git"}, "base-devel 1.0-1\ngit 1.0-1"},
	} {
		out, code, err := run(ctx, e.sb, l.Rootfs, c.uid, c.args...)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("%v as %d: exit %d, output %q, want %q", c.args, c.uid, code, out, c.want)
		}
	}

	// The layer is exactly what the setup changed: compare the flattened
	// base with the flattened builder.
	rf, err := e.store.Rootfs(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Release()
	before, after := snapshot(t, rf.Dir), snapshot(t, l.Rootfs)
	bimg, _ := layoutImage(t, e.m, builder.LayoutTag(base))
	layers, err := bimg.Layers()
	if err != nil {
		t.Fatal(err)
	}
	checkLayerIsDiff(t, layers[len(layers)-1], before, after)
	for _, p := range []string{"build", "etc/pacman.conf", "usr/share/vagent-test/git", "etc/skel/.vagent", "var/lib/pacman/local/git-1.0-1/desc"} {
		if _, ok := after[p]; !ok {
			t.Errorf("%s missing from the builder", p)
		}
	}
	if _, ok := after["etc/issue.net"]; ok {
		t.Error("etc/issue.net still in the builder: the scriptlet did not run, deletions not exercised")
	}

	// The builder image is consistent (manifest, config, every blob
	// present with its size), and the one layer vagent wrote hashes to its
	// digest and diff id. The base layers are the test's own: reading them
	// through gzip under the race detector took two minutes; skopeo and
	// umoci below verify every blob's digest anyway.
	if err := validate.Image(bimg, validate.Fast); err != nil {
		t.Errorf("validate.Image: %v", err)
	}
	if err := validate.Layer(layers[len(layers)-1]); err != nil {
		t.Errorf("validate.Layer of the builder layer: %v", err)
	}
	compareWithUmoci(t, e.m.LayoutDir(), builder.LayoutTag(base), l.Rootfs)
}

// gzipLayers returns the Arch-like image (img, from its layout dir) with
// every layer gzip-compressed (OCI media types). go-containerregistry's
// validate.Image reads every layer through gzip, and Debian's umoci 0.4.7
// cannot read zstd: the image's zstd and uncompressed layers would fail
// both for reasons that have nothing to do with the builder. The layers
// are recompressed by zstd and pigz (fast, also under the race detector).
func gzipLayers(t testing.TB, img v1.Image, layoutDir string) v1.Image {
	t.Helper()
	zstd := testkit.RequireTool(t, "zstd", "zstd")
	pigz := testkit.RequireTool(t, "pigz", "pigz")
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	out := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	out = mutate.ConfigMediaType(out, types.OCIConfigJSON)
	dir := t.TempDir()
	for i, l := range layers {
		digest, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		// The config's diff id: asking the layout's layer would
		// decompress it (half a minute under the race detector).
		if i >= len(cfg.RootFS.DiffIDs) {
			t.Fatalf("config has %d diff ids for %d layers", len(cfg.RootFS.DiffIDs), len(layers))
		}
		diffID := cfg.RootFS.DiffIDs[i]
		mt, err := l.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(layoutDir, "blobs", digest.Algorithm, digest.Hex)
		dst := filepath.Join(dir, fmt.Sprintf("layer%d.tar.gz", i))
		var script string
		switch mt {
		case types.OCILayer, types.DockerLayer:
			script = `cp "$3" "$4"`
		case types.OCILayerZStd:
			script = `"$1" -dcq "$3" | "$2" -1 -n >"$4"`
		case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
			script = `"$2" -1 -n -c "$3" >"$4"`
		default:
			t.Fatalf("layer %d: media type %s", i, mt)
		}
		if b, err := exec.CommandContext(t.Context(), "/bin/sh", "-c", "set -e; "+script, "sh", zstd, pigz, src, dst).CombinedOutput(); err != nil {
			t.Fatalf("recompressing layer %d: %v\n%s", i, err, b)
		}
		f, err := os.Open(dst)
		if err != nil {
			t.Fatal(err)
		}
		h, size, err := v1.SHA256(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		gl := &gzipFileLayer{path: dst, digest: h, diffID: diffID, size: size}
		if out, err = mutate.Append(out, mutate.Addendum{Layer: gl, MediaType: types.OCILayer}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := out.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c = c.DeepCopy()
	c.OS, c.Architecture, c.Variant, c.Config = cfg.OS, cfg.Architecture, cfg.Variant, cfg.Config
	if out, err = mutate.ConfigFile(out, c); err != nil {
		t.Fatal(err)
	}
	return out
}

// gzipFileLayer is a gzip layer blob in a file.
type gzipFileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

func (l *gzipFileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *gzipFileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *gzipFileLayer) Size() (int64, error)                { return l.size, nil }
func (l *gzipFileLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *gzipFileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *gzipFileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// checkLayerIsDiff checks that layer holds exactly the difference between
// the trees before and after: every added or changed path as an entry,
// every deleted one under a whiteout or an opaque directory, and nothing
// else but directories the overlay copied up unchanged.
func checkLayerIsDiff(t *testing.T, layer v1.Layer, before, after map[string]node) {
	t.Helper()
	ents := layerEntries(t, layer)
	entries := map[string]*tar.Header{}
	whiteouts := map[string]bool{}
	opaque := map[string]bool{}
	for name, h := range ents {
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == ".wh..wh..opq":
			opaque[dir] = true
		case strings.HasPrefix(base, ".wh."):
			whiteouts[path.Join(dir, strings.TrimPrefix(base, ".wh."))] = true
		default:
			entries[name] = h
		}
	}
	var added, changed, deleted []string
	for p, n := range after {
		if b, ok := before[p]; !ok {
			added = append(added, p)
		} else if !cmp.Equal(b, n) {
			changed = append(changed, p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			deleted = append(deleted, p)
		}
	}
	sort.Strings(added)
	sort.Strings(changed)
	sort.Strings(deleted)
	if len(added) == 0 || len(changed) == 0 || len(deleted) == 0 || len(whiteouts) == 0 || len(opaque) == 0 {
		t.Errorf("setup made %d additions, %d changes, %d deletions, %d whiteouts, %d opaque dirs: not all kinds exercised",
			len(added), len(changed), len(deleted), len(whiteouts), len(opaque))
	}
	for _, p := range append(append([]string(nil), added...), changed...) {
		if _, ok := entries[p]; !ok {
			t.Errorf("%s changed by the setup but not in the layer (before %+v, after %+v)", p, before[p], after[p])
		}
	}
	covered := func(p string) bool {
		for q := p; q != "."; q = path.Dir(q) {
			if whiteouts[q] {
				return true
			}
			if q != p && opaque[q] {
				return true
			}
		}
		return false
	}
	for _, p := range deleted {
		if !covered(p) {
			t.Errorf("%s deleted by the setup but no whiteout or opaque directory covers it", p)
		}
	}
	for p, h := range entries {
		b, inBefore := before[p]
		a, inAfter := after[p]
		switch {
		case !inAfter:
			t.Errorf("layer entry %s is not in the builder", p)
		case !inBefore || !cmp.Equal(a, b):
			// added or changed: fine
		case h.Typeflag != tar.TypeDir:
			t.Errorf("layer entry %s (%c) is unchanged from the base", p, h.Typeflag)
		}
	}
	for p := range whiteouts {
		if _, ok := before[p]; !ok {
			t.Errorf("whiteout of %s, which the base does not have", p)
		}
		if _, ok := after[p]; ok {
			t.Errorf("whiteout of %s, which the builder has", p)
		}
	}
	for d := range opaque {
		if after[d].Type != "dir" {
			t.Errorf("opaque marker in %s, which is not a directory of the builder", d)
		}
	}
	t.Logf("builder layer: %d added, %d changed, %d deleted paths; %d entries, %d whiteouts, %d opaque directories",
		len(added), len(changed), len(deleted), len(entries), len(whiteouts), len(opaque))
}

// compareWithUmoci unpacks the builder image from vagent's layout with
// umoci: the tree must equal vagent's rootfs. skopeo must be able to copy
// the image out of the layout too.
func compareWithUmoci(t *testing.T, layoutDir, tag, rootfs string) {
	t.Helper()
	skopeo := testkit.RequireTool(t, "skopeo", "skopeo")
	umoci := testkit.RequireTool(t, "umoci", "umoci")
	work := t.TempDir()
	out := filepath.Join(work, "layout")
	bundle := filepath.Join(work, "bundle")
	for _, args := range [][]string{
		{skopeo, "--insecure-policy", "copy", "--quiet", "oci:" + layoutDir + ":" + tag, "oci:" + out + ":builder"},
		{umoci, "unpack", "--image", layoutDir + ":" + tag, bundle},
	} {
		if b, err := exec.CommandContext(t.Context(), args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	want, got := snapshot(t, filepath.Join(bundle, "rootfs")), snapshot(t, rootfs)
	if len(want) < 1000 {
		t.Fatalf("umoci's rootfs has only %d paths", len(want))
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
	bad := 0
	for _, p := range paths {
		if d := cmp.Diff(want[p], got[p]); d != "" {
			if bad++; bad <= 30 {
				t.Errorf("%s (-umoci +vagent):\n%s", p, d)
			}
		}
	}
	if bad > 30 {
		t.Errorf("%d differing paths in all", bad)
	}
	t.Logf("umoci unpack of the builder image equals vagent's rootfs: %d paths", len(want))
}
