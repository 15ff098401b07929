package job

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// BuildLogSuffix ends the name of a build log a local build keeps next to
// its packages (<pkgbase>-<version>-<arch>-build.log, devtools' name).
const BuildLogSuffix = "-build.log"

// isOutput tells whether a file of a PKGBUILD's directory is an output of
// an earlier build: a package, its signature, or a build log. A local
// source's copy into the build leaves them out.
func isOutput(name string) bool {
	return strings.Contains(name, ".pkg.tar") || strings.HasSuffix(name, BuildLogSuffix)
}

// excludeFile is the control directory's list of the local source's paths
// the copy leaves out (relative, NUL-terminated).
const excludeFile = "exclude"

// maxExcludeEntries bounds the entries of the PKGBUILD's directory read to
// find outputs.
const maxExcludeEntries = 1 << 16

// sourceExcludes returns what the copy of the local source srcDir leaves
// out, relative to srcDir: the outputs of earlier builds in the PKGBUILD's
// directory (srcDir/subdir), and the output directory when it lies inside
// srcDir below the PKGBUILD's directory or beside it. srcDir is the
// invoking user's own directory: read on the host, as that user's files.
func (b *Runner) sourceExcludes(srcDir, subdir string) ([]string, error) {
	var out []string
	pkgDir := filepath.Join(srcDir, filepath.FromSlash(subdir))
	d, err := os.Open(pkgDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // the script says there is no such path
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	for seen := 0; seen < maxExcludeEntries; {
		names, err := d.Readdirnames(256)
		for _, n := range names {
			if isOutput(n) {
				out = append(out, filepath.ToSlash(filepath.Join(subdir, n)))
			}
		}
		seen += len(names)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if o := b.opts.outDir; o != "" {
		if rel, err := filepath.Rel(srcDir, o); err == nil && rel != "." && filepath.IsLocal(rel) && rel != filepath.FromSlash(subdir) &&
			!strings.HasPrefix(filepath.FromSlash(subdir), rel+string(filepath.Separator)) {
			out = append(out, filepath.ToSlash(rel))
		}
	}
	return out, nil
}

// writeExcludes writes the list of sourceExcludes into the control
// directory dir.
func writeExcludes(dir string, paths []string) error {
	var buf bytes.Buffer
	for _, p := range paths {
		buf.WriteString(p)
		buf.WriteByte(0)
	}
	return os.WriteFile(filepath.Join(dir, excludeFile), buf.Bytes(), 0o644)
}
