package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/vieter-v/vagent/job"
)

// buildSource is what `vagent build` builds: a local directory, or a
// remote source (a git repository, a PKGBUILD URL).
type buildSource struct {
	// dir is the local directory copied into the build ("" for a remote
	// source), pkgbuildDir the directory of its PKGBUILD (dir/--path):
	// where packages and the build log go by default.
	dir, pkgbuildDir string
	// kind and url are a remote source's (job kinds "git" and "url").
	kind, url string
}

// errSource: SOURCE names nothing `vagent build` can build. Such a source
// is refused before anything is set up (exit status 1).
var errSource = errors.New("source")

// sourceWant is what SOURCE may be, for errors.
const sourceWant = "want a directory holding a PKGBUILD, a PKGBUILD, a git URL or a PKGBUILD URL"

// resolveSource reads SOURCE: a URL (scheme://…, scp-like [user@]host:path,
// or a transport::address that validation refuses) is remote; anything
// else is a local path, which must be a PKGBUILD file or a directory whose
// subdir (--path) holds a PKGBUILD — checked here, before any sandbox. A
// mistyped directory is not taken for a git URL.
func resolveSource(src, subdir string) (buildSource, error) {
	if isRemoteSource(src) {
		return buildSource{kind: sourceKind(src), url: src}, nil
	}
	if err := job.ValidatePath(subdir); err != nil {
		return buildSource{}, usageError("--path: %v", err)
	}
	fi, err := os.Stat(src)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return buildSource{}, fmt.Errorf("%w %s: no such file or directory (%s)", errSource, src, sourceWant)
	case err != nil:
		return buildSource{}, fmt.Errorf("%w: %w", errSource, err)
	case fi.Mode().IsRegular():
		if filepath.Base(src) != "PKGBUILD" {
			return buildSource{}, fmt.Errorf("%w %s: not a PKGBUILD (%s)", errSource, src, sourceWant)
		}
		if subdir != "" {
			return buildSource{}, usageError("--path is for a directory SOURCE; %s is a PKGBUILD", src)
		}
		src = filepath.Dir(src)
	case !fi.IsDir():
		return buildSource{}, fmt.Errorf("%w %s: not a directory or a PKGBUILD (%s)", errSource, src, sourceWant)
	}
	dir, err := filepath.Abs(src)
	if err != nil {
		return buildSource{}, err
	}
	s := buildSource{dir: dir, pkgbuildDir: filepath.Join(dir, filepath.FromSlash(subdir))}
	if fi, err := os.Stat(filepath.Join(s.pkgbuildDir, "PKGBUILD")); err != nil || !fi.Mode().IsRegular() {
		where := src
		if subdir != "" {
			where = filepath.Join(src, subdir)
		}
		return buildSource{}, fmt.Errorf("%w %s: no PKGBUILD in %s (%s)", errSource, src, where, sourceWant)
	}
	return s, nil
}

// isRemoteSource tells a URL from a local path as git does: a path has no
// "://" and no ':' before its first '/'. Sources starting with '-' are
// never local (validation refuses them as URLs).
func isRemoteSource(src string) bool {
	if strings.HasPrefix(src, "-") || strings.Contains(src, "://") {
		return true
	}
	colon, slash := strings.IndexByte(src, ':'), strings.IndexByte(src, '/')
	return colon > 0 && (slash < 0 || colon < slash)
}

// sourceKind tells a PKGBUILD URL (http(s), last path element PKGBUILD)
// from a git repository.
func sourceKind(src string) string {
	if u, err := url.Parse(src); err == nil && (u.Scheme == "http" || u.Scheme == "https") && path.Base(u.Path) == "PKGBUILD" {
		return "url"
	}
	return "git"
}

// defaultOutDir is where packages and the build log go without --out: next
// to the PKGBUILD of a local source, as makepkg and devtools put them, and
// in the working directory for a remote one.
func (s buildSource) defaultOutDir() (string, error) {
	if s.pkgbuildDir != "" {
		return s.pkgbuildDir, nil
	}
	return os.Getwd()
}
