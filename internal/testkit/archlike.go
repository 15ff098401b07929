package testkit

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/sirupsen/logrus"
)

// The Arch-like builder image: Debian (debootstrap --variant=minbase) with
// Debian's pacman and makepkg, in three layers:
//
//	L1 (gzip)          the debootstrap tree
//	L2 (zstd)          the fix-ups of archlike/fixups.sh: a builder user
//	                   (uid 1000, sudo), /etc/mtab, an initialised pacman
//	                   database, PKGEXT='.pkg.tar.zst', and an xattr
//	L3 (uncompressed)  cleanup: apt lists and caches deleted (whiteouts),
//	                   /usr/share/man deleted (a directory whiteout),
//	                   /usr/share/doc replaced (an opaque directory)
//
// so that all three layer media types, file and directory whiteouts and an
// opaque directory appear in a real image. It is built once per recipe and
// cached as an OCI image layout.

// ArchLikeTag is the tag of the image in its OCI layout (the
// org.opencontainers.image.ref.name annotation): use DIR:latest with
// skopeo's oci: transport or umoci's --image.
const ArchLikeTag = "latest"

// ArchLikeXattr is an extended attribute that L2 sets on /etc/makepkg.conf
// so that a real image carries one (user.* works on any filesystem that
// supports xattrs at all).
const (
	ArchLikeXattr      = "user.vagent.testkit"
	ArchLikeXattrValue = "pkgext"
)

//go:embed archlike/fixups.sh
var archLikeFixups string

// archLikeRecipeVersion changes whenever the Go code that builds the image
// changes what it produces; the fix-up script is hashed by content.
const archLikeRecipeVersion = 1

// recipe is everything the image depends on; its hash keys the cache.
type recipe struct {
	Version  int      `json:"version"`
	Release  string   `json:"release"`
	Variant  string   `json:"variant"`
	Packages []string `json:"packages"`
	// Clean lists globs deleted before L1, as `apt-get clean` would (the
	// .deb files debootstrap leaves in apt's cache).
	Clean  []string `json:"clean"`
	Fixups string   `json:"fixups"`
	// Remove lists globs deleted in L3; Replace lists directories removed
	// and recreated (empty but for a README) in L3.
	Remove  []string `json:"remove"`
	Replace []string `json:"replace"`
}

var archLikeRecipe = recipe{
	Version: archLikeRecipeVersion,
	Release: "bookworm",
	Variant: "minbase",
	Packages: []string{
		"pacman-package-manager", "makepkg", "git", "curl", "sudo", "fakeroot",
		"libarchive-tools", "zstd", "binutils", "file", "ca-certificates",
	},
	// Besides apt's cache: what no build reads and every test would
	// unpack, a third of the tree (translations, apt's package lists,
	// changelogs).
	Clean: []string{
		"var/cache/apt/archives/*.deb",
		"var/lib/apt/lists/*_*", // the package lists, not lock and partial/
		"usr/share/locale/*/LC_MESSAGES",
		"usr/share/doc/*/changelog*",
	},
	Fixups: archLikeFixups,
	Remove: []string{
		"var/cache/apt/*.bin",
		"var/cache/debconf/*-old",
		"usr/share/man",
	},
	Replace: []string{"usr/share/doc"},
}

// key returns a short hash of the recipe.
func (r recipe) key() string {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// DefaultCacheDir is where test images are cached unless
// $VAGENT_TESTIMAGE_CACHE says otherwise. It is outside the repository so
// that clones and `git clean` keep it.
const DefaultCacheDir = "/var/cache/vagent/testimages"

// CacheDir returns $VAGENT_TESTIMAGE_CACHE or DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv("VAGENT_TESTIMAGE_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// ArchLikeLayoutDir returns the directory where the current recipe's image
// is (or would be) cached under cacheDir.
func ArchLikeLayoutDir(cacheDir string) string {
	return filepath.Join(cacheDir, "archlike-"+archLikeRecipe.key())
}

type options struct {
	cacheDir string
	log      logrus.FieldLogger
}

// Option tunes ArchLikeImage.
type Option func(*options) error

// WithCacheDir sets the cache directory (default: CacheDir()).
func WithCacheDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("empty cache dir")
		}
		o.cacheDir = dir
		return nil
	}
}

// WithLogger sets where build progress goes (default: nowhere). The
// debootstrap output is logged at debug level.
func WithLogger(l logrus.FieldLogger) Option {
	return func(o *options) error {
		if l == nil {
			l = silent()
		}
		o.log = l
		return nil
	}
}

// silent is the logger of a caller that sets none, or sets nil.
func silent() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// ArchLikeImage returns the Arch-like image and its OCI layout directory,
// building it first when the cache has no image for the current recipe
// (that needs root, debootstrap and the Debian mirror from the apt
// sources, and takes minutes). Concurrent callers, in this process or
// others, wait for one build. A build is written to a temporary directory
// and renamed into place when complete, so an interrupted build is never
// taken for an image.
func ArchLikeImage(ctx context.Context, opts ...Option) (v1.Image, string, error) {
	o := options{cacheDir: CacheDir(), log: silent()}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, "", fmt.Errorf("arch-like image: %w", err)
		}
	}
	dir := ArchLikeLayoutDir(o.cacheDir)
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		if err := buildArchLike(ctx, o, archLikeRecipe, dir); err != nil {
			return nil, "", fmt.Errorf("arch-like image: %w", err)
		}
	}
	img, err := imageFromLayout(dir)
	if err != nil {
		return nil, "", fmt.Errorf("arch-like image: %w", err)
	}
	return img, dir, nil
}

// PruneArchLike removes from cacheDir the Arch-like images of other
// recipes (older versions of the kit) and returns their directories. It
// must not run while a test of an older checkout uses the cache.
func PruneArchLike(cacheDir string) ([]string, error) {
	keep := ArchLikeLayoutDir(cacheDir)
	ms, err := filepath.Glob(filepath.Join(cacheDir, "archlike-*"))
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, m := range ms {
		if m == keep || m == keep+".lock" {
			continue
		}
		if err := os.RemoveAll(m); err != nil {
			return removed, fmt.Errorf("pruning test images: %w", err)
		}
		if filepath.Ext(m) != ".lock" {
			removed = append(removed, m)
		}
	}
	return removed, nil
}

// imageFromLayout returns the single image of an OCI layout.
func imageFromLayout(dir string) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("layout %s: %d manifests, want 1", dir, len(m.Manifests))
	}
	return idx.Image(m.Manifests[0].Digest)
}

// ArchLike returns the Arch-like image and its layout directory for tb,
// building it if needed. It skips tb (fails it in CI) when the image is not
// cached and cannot be built here: not root, or debootstrap missing.
func ArchLike(tb testing.TB) (v1.Image, string) {
	tb.Helper()
	dir := ArchLikeLayoutDir(CacheDir())
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		RequireRoot(tb)
		RequireTool(tb, "debootstrap", "debootstrap")
		tb.Logf("building the Arch-like test image in %s (minutes; `make testimages` does it ahead)", dir)
	}
	img, dir, err := ArchLikeImage(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	return img, dir
}
