package job

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/lockfile"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

// The package cache: one per target, never shared writably by two builds.
//
//	<cache dir>/           0700, host root: no host user can enter
//	  targets/             0700, host root
//	    <key>/             0700, host root: one target's cache
//	      lock             0600, host root: flock'd by the agent for the
//	                       build that uses this cache; never mounted
//	      pkg/             0755, owned by the mapped root (sandbox
//	                       IDRange): mounted on /var/cache/pacman/pkg
//	      src/             with WithSourceCache: makepkg's SRCDEST
//	                       (downloaded sources, bare mirrors of VCS
//	                       sources), mounted on /var/cache/vagent/sources
//	                       and given to the builder user by the script
//
// A build of a target gets its target's pkg/ while the agent holds the
// target's lock (an exclusive flock, taken without waiting, in the agent's
// process: a build cannot open it, it is not in any mount). A second build
// of the same target at the same time (by this agent or by `vagent build`
// on the same data directory) gets a private cache instead, removed with
// it. So no two builds ever have the same cache at once: a file in pkg/ is
// only ever written by builds of its target, one after the other, each of
// which ended (every process of its container killed) before the next one
// got the cache. See docs/security.md for the argument.
//
// pkg/ is bind-mounted without id mapping: container root writes there as
// the unprivileged mapped root, never as host root, and whatever a build
// leaves there (setuid files, file capabilities, links, FIFOs) lies behind
// directories only host root may enter. After each build the agent removes
// from pkg/ everything that is not a regular file (opened and removed
// without following links), then prunes the whole cache to its size
// (WithCacheMaxSize): least recently used targets first, whole; then, if
// the target just built is larger than the bound on its own, its oldest
// files. "Recently used" is the mtime of the target's lock, which the
// agent sets when a build takes the cache: a build cannot change it. File
// times inside pkg/ are the builds' and only order files of one target.
const (
	targetsDir = "targets"
	lockName   = "lock"
	// cacheTree is the subdirectory of a target's cache (or of a private
	// cache) that builds see.
	cacheTree = "pkg"
	// sourceTree is the subdirectory of a target's cache that holds
	// makepkg's sources (WithSourceCache).
	sourceTree = "src"
)

// cacheKey names the cache of a job: its target id, or for a job without
// one (`vagent build`) a hash of its source, so that building the same
// source again finds its dependencies.
func cacheKey(job poll.Job) string {
	if job.TargetID > 0 {
		return strconv.Itoa(job.TargetID)
	}
	h := sha256.Sum256([]byte(job.Kind + "\x00" + job.URL + "\x00" + job.Branch + "\x00" + job.Path))
	return "src-" + hex.EncodeToString(h[:8])
}

// prepareCache creates the cache directory and removes the one shared tree
// of earlier versions (<cache dir>/pkg with its .vagent.lock, which every
// build wrote).
func (b *Runner) prepareCache() error {
	dir := b.cacheDir()
	if dir == "" {
		return nil
	}
	if err := privateRootDir(dir); err != nil {
		return fmt.Errorf("creating the package cache: %w", err)
	}
	if err := privateRootDir(filepath.Join(dir, targetsDir)); err != nil {
		return fmt.Errorf("creating the package cache: %w", err)
	}
	// Only a tree that is surely the earlier version's: it held the
	// pacman wrapper's lock (a directory the operator named may hold a pkg/
	// of its own).
	old := filepath.Join(dir, cacheTree)
	if _, err := os.Lstat(filepath.Join(old, ".vagent.lock")); err == nil {
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("removing the shared package cache of an earlier version: %w", err)
		}
	}
	return nil
}

// privateRootDir creates dir if needed and makes it 0700 and root's (when
// the agent is root). The directories it is used for are the operator's
// (which may be links) or below a root-only one: no build reaches them.
func privateRootDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if os.Geteuid() == 0 {
		if err := unix.Fchown(fd, 0, 0); err != nil {
			return fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// buildTree creates (or takes as it is) the directory name below the open
// directory parent that builds write to, owned by container root
// (uid:gid, of a range of size ids), and returns its path. A tree that
// builds of another id range wrote (the data dir's range changed) is
// emptied first (inOtherRange): the caller holds it alone.
func buildTree(parent int, parentPath, name string, uid, gid int, size uint32) (string, error) {
	if err := unix.Mkdirat(parent, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("creating %s/%s: %w", parentPath, name, err)
	}
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("opening %s/%s: %w", parentPath, name, err)
	}
	if inOtherRange(fd, uid, gid, size) {
		unix.Close(fd)
		// The parent is root's and out of every build's reach: the path
		// is ours; RemoveTree follows no link below it.
		if err := lockfile.RemoveTree(filepath.Join(parentPath, name)); err != nil {
			return "", fmt.Errorf("emptying %s/%s of another id range: %w", parentPath, name, err)
		}
		if err := unix.Mkdirat(parent, name, 0o755); err != nil {
			return "", fmt.Errorf("creating %s/%s: %w", parentPath, name, err)
		}
		if fd, err = unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			return "", fmt.Errorf("opening %s/%s: %w", parentPath, name, err)
		}
	}
	defer unix.Close(fd)
	if os.Geteuid() == 0 {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return "", fmt.Errorf("chown %s/%s: %w", parentPath, name, err)
		}
	}
	if err := unix.Fchmod(fd, 0o755); err != nil {
		return "", fmt.Errorf("chmod %s/%s: %w", parentPath, name, err)
	}
	return filepath.Join(parentPath, name), nil
}

// cacheLease is the package cache of one build.
type cacheLease struct {
	tree string // the directory to mount on /var/cache/pacman/pkg
	// src is the target's source cache to mount on srcCacheMount ("":
	// none: WithSourceCache is off, or the cache is private).
	src string
	// release ends the lease after the build: a target's cache is cleaned
	// and the whole cache pruned; a private one is removed.
	release func()
}

// errCacheGone means a target's cache was removed (pruned) between opening
// and locking it.
var errCacheGone = errors.New("target cache removed meanwhile")

// leaseCache returns the package cache of a build of job: its target's,
// or a private one when the caches are off or another build holds
// the target's (said in the log).
func (b *Runner) leaseCache(job poll.Job, log io.Writer) (*cacheLease, error) {
	dir := b.cacheDir()
	if dir == "" {
		return b.privateCache()
	}
	key := cacheKey(job)
	for range 10 {
		l, err := b.lockTargetCache(dir, key)
		switch {
		case errors.Is(err, errCacheGone):
			continue
		case err != nil:
			return nil, err
		case l == nil:
			fmt.Fprintf(log, "vagent: another build of this target holds its package cache; this build gets a private one\n")
			return b.privateCache()
		}
		return l, nil
	}
	return nil, fmt.Errorf("the package cache of %s keeps being removed", key)
}

// lockTargetCache takes the cache of target key, or returns nil when
// another build holds it.
func (b *Runner) lockTargetCache(dir, key string) (_ *cacheLease, retErr error) {
	tdir := filepath.Join(dir, targetsDir, key)
	if err := privateRootDir(tdir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errCacheGone
		}
		return nil, fmt.Errorf("creating the package cache %s: %w", tdir, err)
	}
	lockPath := filepath.Join(tdir, lockName)
	fd, err := unix.Open(lockPath, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ENOENT) {
		return nil, errCacheGone
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", lockPath, err)
	}
	lock := os.NewFile(uintptr(fd), lockPath)
	defer func() {
		if retErr != nil {
			lock.Close()
		}
	}()
	ok, err := lockfile.Lock(lock, true, false)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", lockPath, err)
	}
	if !ok {
		lock.Close()
		return nil, nil
	}
	// A prune removes a target's cache, lock included, while holding the
	// lock: a lock taken on the removed file is no lock.
	if !sameFileAt(lock, lockPath) {
		return nil, errCacheGone
	}
	now := time.Now()
	if err := os.Chtimes(lockPath, now, now); err != nil { // the LRU stamp
		return nil, err
	}
	top, err := unix.Open(tdir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	tree, err := buildTree(top, tdir, cacheTree, b.rootUID, b.rootGID, b.idSize)
	unix.Close(top)
	if err != nil {
		return nil, err
	}
	// What a build left that a crashed agent did not clean up.
	if err := cleanTree(tree); err != nil {
		return nil, fmt.Errorf("cleaning the package cache %s: %w", tree, err)
	}
	src := ""
	if b.opts.sourceCache {
		top, err := unix.Open(tdir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		src, err = buildTree(top, tdir, sourceTree, b.rootUID, b.rootGID, b.idSize)
		unix.Close(top)
		if err != nil {
			return nil, err
		}
		if err := cleanSourceTree(src); err != nil {
			return nil, fmt.Errorf("cleaning the source cache %s: %w", src, err)
		}
	}
	return &cacheLease{tree: tree, src: src, release: func() {
		if err := cleanTree(tree); err != nil {
			b.opts.log.WithError(err).WithField("cache", tree).Warn("cleaning a package cache")
		}
		if src != "" {
			if err := cleanSourceTree(src); err != nil {
				b.opts.log.WithError(err).WithField("cache", src).Warn("cleaning a source cache")
			}
		}
		if err := b.pruneCaches(key); err != nil {
			b.opts.log.WithError(err).Warn("pruning the package cache")
		}
		lock.Close()
	}}, nil
}

// privateCache returns a cache of the build's own, removed after it.
func (b *Runner) privateCache() (*cacheLease, error) {
	// Locked while it lives: a process starting beside this one removes
	// only the private caches of dead ones (lockfile.RemoveStale).
	dir, lock, err := lockfile.MkdirTemp(b.runsDir(), "cache-")
	if err != nil {
		return nil, err
	}
	drop := func() {
		_ = os.RemoveAll(dir)
		lock.Close()
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		drop()
		return nil, err
	}
	tree, err := buildTree(fd, dir, cacheTree, b.rootUID, b.rootGID, b.idSize)
	unix.Close(fd)
	if err != nil {
		drop()
		return nil, err
	}
	return &cacheLease{tree: tree, release: drop}, nil
}

// sameFileAt tells whether path still names f's file.
func sameFileAt(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(path)
	return err == nil && os.SameFile(a, b)
}

// cleanTree removes from the cache tree dir everything that is not a
// regular file: links, FIFOs, sockets, devices and directories a build
// left there (os.RemoveAll removes a link, never its target, and walks a
// directory without following links).
func cleanTree(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	var errs []error
	for {
		ents, rerr := d.ReadDir(256)
		for _, e := range ents {
			if e.Type().IsRegular() {
				continue
			}
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
		if rerr != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// cleanSourceTree removes from the source cache dir, at any depth,
// everything that is neither a regular file nor a directory: links,
// FIFOs, sockets and devices a build left (makepkg keeps downloaded files
// and bare git mirrors there, which hold neither). Nothing is followed.
func cleanSourceTree(dir string) error {
	var errs []error
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			errs = append(errs, err)
			return nil
		}
		if t := d.Type(); !t.IsRegular() && !t.IsDir() {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// targetCache is one target's cache as a prune sees it.
type targetCache struct {
	key  string
	used time.Time // the lock's mtime
	size int64
}

// pruneCaches brings the whole cache within the size bound: it removes the
// caches of the least recently used targets not in use, whole, then the
// oldest files of the target own (whose lock the caller holds).
func (b *Runner) pruneCaches(own string) error {
	limit := b.opts.cacheMaxSize
	if limit <= 0 {
		return nil
	}
	root := filepath.Join(b.cacheDir(), targetsDir)
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	var total int64
	var all []targetCache
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		tc := targetCache{key: e.Name()}
		if fi, err := os.Lstat(filepath.Join(root, e.Name(), lockName)); err == nil {
			tc.used = fi.ModTime()
		}
		n, err := sandbox.DiskUsage(filepath.Join(root, e.Name(), cacheTree))
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			var m int64
			m, err = sandbox.DiskUsage(filepath.Join(root, e.Name(), sourceTree))
			n += m
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Not measurable (a tree a crash left uncleaned): a cache
			// is worth less than a working prune.
			b.opts.log.WithError(err).WithField("cache", e.Name()).Warn("removing a package cache that cannot be measured")
			if e.Name() != own {
				if _, err := removeTargetCache(filepath.Join(root, e.Name())); err != nil {
					return err
				}
			}
			continue
		}
		tc.size = n
		total += n
		all = append(all, tc)
	}
	if total <= limit {
		return nil
	}
	slices.SortFunc(all, func(a, c targetCache) int { return a.used.Compare(c.used) })
	for _, tc := range all {
		if total <= limit {
			return nil
		}
		if tc.key == own {
			continue
		}
		removed, err := removeTargetCache(filepath.Join(root, tc.key))
		if err != nil {
			return err
		}
		if removed {
			total -= tc.size
		}
	}
	if total <= limit {
		return nil
	}
	need := total - limit
	freed, err := pruneFiles(filepath.Join(root, own, cacheTree), need)
	if err != nil || freed >= need {
		return err
	}
	_, err = pruneFiles(filepath.Join(root, own, sourceTree), need-freed)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// removeTargetCache removes the cache of one target unless a build holds
// it: lock, tree and directory, all while holding its lock (see
// lockTargetCache).
func removeTargetCache(tdir string) (bool, error) {
	lockPath := filepath.Join(tdir, lockName)
	// Created when missing (a directory a crash left half made): nothing
	// is removed without holding the lock a build would take.
	fd, err := unix.Open(lockPath, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ENOENT) {
		return false, nil // removed meanwhile
	}
	if err != nil {
		return false, err
	}
	lock := os.NewFile(uintptr(fd), lockPath)
	defer lock.Close()
	if ok, err := lockfile.Lock(lock, true, false); err != nil || !ok {
		return false, err
	}
	if !sameFileAt(lock, lockPath) {
		return false, nil
	}
	for _, t := range []string{cacheTree, sourceTree} {
		if err := os.RemoveAll(filepath.Join(tdir, t)); err != nil {
			return false, err
		}
	}
	if err := os.Remove(lockPath); err != nil {
		return true, err
	}
	return true, os.Remove(tdir)
}

// pruneFiles removes the oldest entries (by mtime) of the tree dir until
// at least need bytes are freed, and returns how many were: regular files
// (the package cache), and whole directories (a source cache's bare
// mirrors), measured as build_limits.disk measures.
func pruneFiles(dir string, need int64) (int64, error) {
	type file struct {
		name  string
		mtime time.Time
		size  int64
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var files []file
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			continue
		}
		size := max(st.Blocks*512, 4096)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
		case unix.S_IFDIR:
			if size, err = sandbox.DiskUsage(p); err != nil {
				continue
			}
		default:
			continue
		}
		files = append(files, file{e.Name(), time.Unix(st.Mtim.Unix()), size})
	}
	slices.SortFunc(files, func(a, c file) int { return a.mtime.Compare(c.mtime) })
	var freed int64
	for _, f := range files {
		if freed >= need {
			break
		}
		if err := os.RemoveAll(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return freed, err
		}
		freed += f.size
	}
	return freed, nil
}
