package testkit

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestRecipeKey(t *testing.T) {
	k := archLikeRecipe.key()
	if len(k) != 16 || k != archLikeRecipe.key() {
		t.Fatalf("key %q not a stable 16-hex hash", k)
	}
	changed := archLikeRecipe
	changed.Packages = append([]string{"extra"}, changed.Packages...)
	if changed.key() == k {
		t.Error("package list not part of the key")
	}
	changed = archLikeRecipe
	changed.Fixups += "\ntrue\n"
	if changed.key() == k {
		t.Error("fix-up script not part of the key")
	}
	if !strings.Contains(archLikeRecipe.Fixups, "ALPM_DB_VERSION") {
		t.Error("fix-up script not embedded")
	}
	t.Setenv("VAGENT_TESTIMAGE_CACHE", "/somewhere")
	if got := ArchLikeLayoutDir(CacheDir()); got != "/somewhere/archlike-"+k {
		t.Errorf("layout dir %s", got)
	}
}

func TestPruneArchLike(t *testing.T) {
	cache := t.TempDir()
	keep := ArchLikeLayoutDir(cache)
	for _, d := range []string{keep, filepath.Join(cache, "archlike-0000000000000000"), filepath.Join(cache, "other")} {
		if err := os.MkdirAll(filepath.Join(d, "blobs"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{keep + ".lock", filepath.Join(cache, "archlike-0000000000000000.lock")} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := PruneArchLike(cache)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != filepath.Join(cache, "archlike-0000000000000000") {
		t.Errorf("removed %v", removed)
	}
	left, _ := filepath.Glob(filepath.Join(cache, "*"))
	want := []string{keep, keep + ".lock", filepath.Join(cache, "other")}
	if strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("left %v, want %v", left, want)
	}
}

// flatEntry is a path of the flattened image and what put it there.
type flatEntry struct {
	layerEntry
	layer int
	xattr string
}

// TestArchLikeImage checks the cached (or freshly built) image: three
// layers in the three media types, real whiteouts and an opaque directory,
// and, after applying the layers the OCI way, pacman, makepkg and the
// fix-ups in place.
func TestArchLikeImage(t *testing.T) {
	img, dir := ArchLike(t)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", m.MediaType)
	}
	if len(m.Layers) < 3 {
		t.Fatalf("%d layers, want at least 3", len(m.Layers))
	}
	seen := map[types.MediaType]bool{}
	for _, l := range m.Layers {
		seen[l.MediaType] = true
	}
	for _, mt := range []types.MediaType{types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer} {
		if !seen[mt] {
			t.Errorf("no %s layer", mt)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		t.Errorf("not an OCI layout: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Labels["org.vieter.vagent.testimage.recipe"] != archLikeRecipe.key() {
		t.Errorf("labels %v: not the current recipe", cf.Config.Labels)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	keep := func(n string) bool {
		return n == "etc/makepkg.conf" || n == "etc/passwd" || strings.HasPrefix(n, "var/lib/pacman/") ||
			strings.HasPrefix(n, "usr/share/doc/")
	}
	flat := map[string]flatEntry{}
	var whiteouts, opaques []string
	for i, l := range layers {
		rc := uncompressed(t, l)
		tr := tar.NewReader(rc)
		var adds []flatEntry
		var names []string
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			name := strings.TrimSuffix(h.Name, "/")
			dir, base := path.Split(name)
			dir = strings.TrimSuffix(dir, "/")
			switch {
			case base == ".wh..wh..opq":
				opaques = append(opaques, name)
				for p, e := range flat {
					if e.layer < i && strings.HasPrefix(p, dir+"/") {
						delete(flat, p)
					}
				}
				continue
			case strings.HasPrefix(base, ".wh."):
				whiteouts = append(whiteouts, name)
				gone := path.Join(dir, strings.TrimPrefix(base, ".wh."))
				for p, e := range flat {
					if e.layer < i && (p == gone || strings.HasPrefix(p, gone+"/")) {
						delete(flat, p)
					}
				}
				continue
			}
			e := flatEntry{layerEntry: layerEntry{Type: h.Typeflag, Mode: h.Mode, Uid: h.Uid, Gid: h.Gid, Linkname: h.Linkname}, layer: i}
			e.xattr = h.PAXRecords["SCHILY.xattr."+ArchLikeXattr]
			if h.Typeflag == tar.TypeReg && keep(name) {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				e.Body = string(b)
			}
			adds = append(adds, e)
			names = append(names, name)
		}
		rc.Close()
		for j, n := range names {
			flat[n] = adds[j]
		}
	}
	if len(whiteouts) == 0 || len(opaques) == 0 {
		t.Fatalf("whiteouts %v, opaque markers %v: want both", whiteouts, opaques)
	}
	t.Logf("%d paths, %d whiteouts, opaque markers %v", len(flat), len(whiteouts), opaques)

	for _, p := range []string{"usr/bin/pacman", "usr/bin/makepkg", "usr/bin/bsdtar", "usr/bin/fakeroot", "usr/bin/git", "usr/bin/sudo"} {
		if e, ok := flat[p]; !ok || (e.Type != tar.TypeReg && e.Type != tar.TypeSymlink && e.Type != tar.TypeLink) {
			t.Errorf("%s missing from the flattened image (%+v)", p, e)
		}
	}
	if e := flat["etc/mtab"]; e.Type != tar.TypeSymlink || e.Linkname != "/proc/self/mounts" {
		t.Errorf("etc/mtab: %+v", e)
	}
	if e := flat["var/lib/pacman/local/ALPM_DB_VERSION"]; e.Body != "9\n" {
		t.Errorf("ALPM_DB_VERSION: %+v", e)
	}
	mk := flat["etc/makepkg.conf"]
	if !strings.Contains(mk.Body, "\nPKGEXT='.pkg.tar.zst'\n") {
		t.Error("makepkg.conf does not set PKGEXT='.pkg.tar.zst'")
	}
	if mk.xattr != ArchLikeXattrValue {
		t.Errorf("makepkg.conf xattr %q, want %q", mk.xattr, ArchLikeXattrValue)
	}
	if !strings.Contains(flat["etc/passwd"].Body, "\nbuilder:x:1000:1000:") {
		t.Error("no builder (1000) in /etc/passwd")
	}
	if e := flat["home/builder"]; e.Type != tar.TypeDir || e.Uid != 1000 || e.Gid != 1000 {
		t.Errorf("home/builder: %+v", e)
	}
	var doc []string
	for p := range flat {
		if strings.HasPrefix(p, "usr/share/doc/") {
			doc = append(doc, p)
		}
		if strings.HasPrefix(p, "usr/share/man/") || p == "usr/share/man" {
			t.Errorf("%s survived its whiteout", p)
		}
		if strings.HasPrefix(p, "dev/") || strings.HasPrefix(p, "proc/") {
			t.Errorf("%s: pseudo-filesystem content in the image", p)
		}
	}
	if len(doc) != 1 || doc[0] != "usr/share/doc/README" {
		t.Errorf("usr/share/doc after the opaque layer: %v", doc)
	}
	// Hardlinks within a layer are kept (perl-base ships some).
	var links int
	for _, e := range flat {
		if e.Type == tar.TypeLink {
			links++
		}
	}
	if links == 0 {
		t.Error("no hardlink in the image")
	}
}
