package job

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// A package cache directory holds one subdirectory, cacheTree, which is what
// builds see on /var/cache/pacman/pkg:
//
//	<cache dir>/       0700, host root: no host user can enter
//	  pkg/             0755, owned by the mapped root (sandbox IDRange)
//	    .vagent.lock   the flock of the pacman wrapper
//	    *.pkg.tar*     what pacman downloaded
//
// pkg/ is bind-mounted without id mapping: container root writes there as
// the unprivileged mapped root, never as host root, and whatever a build
// leaves there (setuid or setgid files, file capabilities, files chowned to
// any id of the range) lies behind a directory only host root may enter.
const lockName = ".vagent.lock"

// initCache prepares the package cache directory dir for builds whose
// container root is host uid:gid (of a range of size ids) and returns the
// directory to mount. A tree of another range's builds is moved to this
// one (followRange).
// Everything below pkg/ may have been planted by a build: it is reached
// only through descriptors opened without following links.
func initCache(dir string, uid, gid int, size uint32) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating the package cache: %w", err)
	}
	// dir is the operator's path (its parents may be links), not the
	// build's: only what is below it is opened without following links.
	top, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("opening the package cache: %w", err)
	}
	defer unix.Close(top)
	if os.Geteuid() == 0 {
		if err := unix.Fchown(top, 0, 0); err != nil {
			return "", fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	if err := unix.Fchmod(top, 0o700); err != nil {
		return "", fmt.Errorf("chmod %s: %w", dir, err)
	}
	if err := unix.Mkdirat(top, cacheTree, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("creating %s/%s: %w", dir, cacheTree, err)
	}
	tree, err := unix.Openat(top, cacheTree, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("opening %s/%s: %w", dir, cacheTree, err)
	}
	defer unix.Close(tree)
	if otherRange(tree, uid, gid) {
		// One Runner at a time moves a tree of an earlier id range.
		if err := unix.Flock(top, unix.LOCK_EX); err != nil {
			return "", fmt.Errorf("locking %s: %w", dir, err)
		}
		err := followRange(tree, filepath.Join(dir, cacheTree), uid, gid, size)
		_ = unix.Flock(top, unix.LOCK_UN)
		if err != nil {
			return "", err
		}
	}
	if os.Geteuid() == 0 {
		if err := unix.Fchown(tree, uid, gid); err != nil {
			return "", fmt.Errorf("chown %s/%s: %w", dir, cacheTree, err)
		}
	}
	if err := unix.Fchmod(tree, 0o755); err != nil {
		return "", fmt.Errorf("chmod %s/%s: %w", dir, cacheTree, err)
	}
	path := filepath.Join(dir, cacheTree)
	if err := ensureLock(tree, path); err != nil {
		return "", fmt.Errorf("creating the cache lock: %w", err)
	}
	return path, nil
}

// ensureLock makes sure that the directory tree (whose path is path) holds a
// regular file lockName. A build may have replaced it by anything: a
// symbolic link (which O_CREATE would follow to create a root-owned file
// anywhere), a FIFO (whose open would block), a directory. The lock is
// opened without following links and without blocking, checked to be a
// regular file, and replaced when it is not.
func ensureLock(tree int, path string) error {
	for range 3 {
		fd, err := unix.Openat(tree, lockName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			var st unix.Stat_t
			err := unix.Fstat(fd, &st)
			unix.Close(fd)
			if err != nil {
				return err
			}
			if st.Mode&unix.S_IFMT == unix.S_IFREG {
				return nil
			}
		case errors.Is(err, unix.ENOENT):
			fd, err := unix.Openat(tree, lockName, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
				return nil
			}
			if !errors.Is(err, unix.EEXIST) {
				return err
			}
			continue
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENXIO):
			// a symbolic link, a socket: remove it below
		default:
			return err
		}
		// os.RemoveAll removes a link, not its target, and walks a
		// directory without following links.
		if err := os.RemoveAll(filepath.Join(path, lockName)); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s/%s keeps changing", path, lockName)
}

// runCache returns the package cache tree of one build (the directory to
// mount): the shared one, or a private one removed by drop when the
// shared cache is off.
func (b *Runner) runCache() (tree string, drop func(), err error) {
	if dir := b.cacheDir(); dir != "" {
		tree, err := initCache(dir, b.rootUID, b.rootGID, b.idSize)
		return tree, func() {}, err
	}
	dir, lock, err := lockfile.MkdirTemp(b.runsDir(), "cache-")
	if err != nil {
		return "", nil, err
	}
	drop = func() {
		_ = os.RemoveAll(dir)
		lock.Close()
	}
	if tree, err = initCache(dir, b.rootUID, b.rootGID, b.idSize); err != nil {
		drop()
		return "", nil, err
	}
	return tree, drop, nil
}
