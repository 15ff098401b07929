package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/lockfile"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/sandbox"
)

// isPackageName tells whether a file in PKGDEST is meant as a package to
// publish: a name with ".pkg.tar" that is not a signature or hidden. Such
// a name must then be valid (pacman.ValidatePackageFile), or the build
// fails before anything is published or copied.
func isPackageName(name string) bool {
	return strings.Contains(name, ".pkg.tar") && !strings.HasSuffix(name, ".sig") && !strings.HasPrefix(name, ".")
}

// Bounds of what the agent takes from a build's PKGDEST.
const (
	// maxPackages is the most package files one build may publish.
	maxPackages = 64
	// maxPackageDirEntries is the most entries the agent reads in PKGDEST.
	maxPackageDirEntries = 4096
	// MaxPackageSize is the largest package file the agent publishes or
	// copies out.
	MaxPackageSize = 8 << 30
)

// packageDir opens PKGDEST in the build's upper directory without
// following symbolic links (the build, root in its container, may have
// replaced any directory on the way with a link to a host path), and lists
// the regular package files in it. Only the path below the upper is
// resolved with RESOLVE_*: the upper itself is the sandbox's, reached by
// its own path, which may cross mount points or symbolic links of the
// host (a data directory on its own filesystem or behind a link).
func packageDir(upper *sandbox.Upper) (*os.File, []string, error) {
	if upper == nil {
		return nil, nil, ErrNoPackages
	}
	root, err := unix.Open(upper.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the build's upper directory: %w", err)
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, outDir, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil, fmt.Errorf("%w: no /%s", ErrNoPackages, outDir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening /%s of the build: %w", outDir, err)
	}
	dir := os.NewFile(uintptr(fd), "/"+outDir)
	names, err := listPackages(dir)
	if err != nil {
		dir.Close()
		return nil, nil, err
	}
	return dir, names, nil
}

// listPackages returns the sorted names of the regular package files in
// dir, reading at most maxPackageDirEntries entries and accepting at most
// maxPackages packages, each with a valid name.
func listPackages(dir *os.File) ([]string, error) {
	var names []string
	seen := 0
	for {
		entries, err := dir.ReadDir(256)
		for _, e := range entries {
			if e.Type().IsRegular() && isPackageName(e.Name()) {
				if err := pacman.ValidatePackageFile(e.Name()); err != nil {
					return nil, fmt.Errorf("%w: /%s: %w", ErrBadPackage, outDir, err)
				}
				names = append(names, e.Name())
			}
		}
		seen += len(entries)
		switch {
		case errors.Is(err, io.EOF):
			sort.Strings(names)
			if len(names) == 0 {
				return nil, fmt.Errorf("%w in /%s", ErrNoPackages, outDir)
			}
			return names, nil
		case err != nil:
			return nil, err
		case seen > maxPackageDirEntries:
			return nil, fmt.Errorf("/%s has more than %d entries", outDir, maxPackageDirEntries)
		case len(names) > maxPackages:
			return nil, fmt.Errorf("/%s has more than %d packages", outDir, maxPackages)
		}
	}
}

// openIn opens the regular file name in dir, refusing a link, a file
// larger than MaxPackageSize and a sparse file: a package has no holes,
// and a hole would be written out whole by a copy or an upload (gigabytes
// from a file that takes nothing on the build's disk).
func openIn(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s is not a regular file", name)
	case fi.Size() > MaxPackageSize:
		err = fmt.Errorf("%s: %d bytes, more than %d", name, fi.Size(), int64(MaxPackageSize))
	default:
		err = refuseHoles(f, name, fi.Size())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// refuseHoles fails for a file of size bytes that has a hole: the first
// hole SEEK_HOLE finds is at its end (every file system that supports
// SEEK_HOLE reports holes; the others report none, and the copy is bounded
// by the size anyway).
func refuseHoles(f *os.File, name string, size int64) error {
	if size == 0 {
		return nil
	}
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil {
		return fmt.Errorf("%s: looking for holes: %w", name, err)
	}
	if _, err := unix.Seek(int(f.Fd()), 0, io.SeekStart); err != nil {
		return err
	}
	if hole < size {
		return fmt.Errorf("%w: %s is a sparse file (%d bytes, a hole at byte %d)", ErrBadPackage, name, size, hole)
	}
	return nil
}

// deliver publishes the packages of a finished build to the server, or
// copies them to the output directory, and returns their names.
func (b *Runner) deliver(ctx context.Context, upper *sandbox.Upper, repo string, log io.Writer) ([]string, error) {
	dir, names, err := packageDir(upper)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	// Every package is checked before any is published or copied: a build
	// fails whole, never half-delivered.
	for _, name := range names {
		f, err := openIn(dir, name)
		if err != nil {
			return nil, err
		}
		f.Close()
	}
	var done []string
	for _, name := range names {
		open := func() (*os.File, error) { return openIn(dir, name) }
		if b.opts.server != nil {
			f, err := open()
			if err != nil {
				return done, err
			}
			err = b.publish(ctx, repo, name, f, log)
			f.Close()
			if err != nil {
				return done, fmt.Errorf("%w: %s: %w", ErrPublish, name, err)
			}
		}
		if b.opts.outDir != "" {
			fmt.Fprintf(log, "+ vagent: copy %s to %s\n", name, b.opts.outDir)
			if err := b.copyOut(open, name); err != nil {
				return done, fmt.Errorf("copying %s to %s: %w", name, b.opts.outDir, err)
			}
		}
		done = append(done, name)
	}
	return done, nil
}

// copyOut writes one package into the output directory, owned by the
// configured user, atomically (lockfile.Write), copying exactly the bytes
// the build wrote.
func (b *Runner) copyOut(open func() (*os.File, error), name string) error {
	if _, err := os.Lstat(b.opts.outDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(b.opts.outDir, 0o755); err != nil {
			return err
		}
		if err := os.Lchown(b.opts.outDir, b.opts.outUID, b.opts.outGID); err != nil {
			return err
		}
	}
	src, err := open()
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	return lockfile.Write(filepath.Join(b.opts.outDir, name), lockfile.WriteOptions{Perm: 0o644}, func(w *os.File) error {
		n, err := io.Copy(w, io.LimitReader(src, fi.Size()+1))
		if err != nil {
			return err
		}
		if n != fi.Size() {
			return fmt.Errorf("%s changed while it was copied (%d bytes, then %d)", name, fi.Size(), n)
		}
		if b.opts.outUID >= 0 || b.opts.outGID >= 0 {
			return w.Chown(b.opts.outUID, b.opts.outGID)
		}
		return nil
	})
}

// failedStepFile is where the script records the step a failed build
// failed in (relative to the root).
const failedStepFile = "build/.vagent-failed"

// failedStep returns the step a failed build recorded, "" when it recorded
// none. The build wrote the file and may have made it anything: it is
// opened beneath the upper without following links, must be a regular
// file, and is read within 64 bytes; failureDetail accepts known steps
// only.
func failedStep(upper *sandbox.Upper) string {
	if upper == nil {
		return ""
	}
	root, err := unix.Open(upper.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, failedStepFile, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return ""
	}
	f := os.NewFile(uintptr(fd), failedStepFile)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	b := make([]byte, 64)
	n, _ := io.ReadFull(f, b)
	return strings.TrimSpace(string(b[:n]))
}
