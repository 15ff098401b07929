package sandbox

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The disk limit (Limits.Disk) bounds what a run adds to the host's file
// systems: its upper directory and its writable bind mounts. It is enforced
// in two layers that need neither root nor a file system of their own, so
// they serve a rootless agent as well (no loop devices, no quotas):
//
//   - the kernel: RLIMIT_FSIZE is set to the limit, so no single file of the
//     run can grow past it (a write past it fails with EFBIG after SIGXFSZ,
//     which kills a process that does not handle it; ftruncate too, so a
//     sparse file cannot claim more either). Container root cannot raise it:
//     that needs CAP_SYS_RESOURCE in the initial user namespace.
//   - a watcher in the agent, which measures the run's trees and stops the
//     run with SIGKILL (no grace: a writer would go on writing) once they
//     hold more than the limit. It measures on a period proportional to the
//     cost of a measurement, and at once when the file systems holding the
//     trees grew by more than the run has left (statfs, every tick: a few
//     microseconds), so a fast writer is caught within about a tick plus one
//     measurement. A last measurement after the run's exit catches what was
//     written between two measurements: a run over the limit never ends as
//     if it were within it.
//
// What counts is the space the trees take beyond what they held when the run
// started (a writable mount may hold files from earlier runs, such as a
// package cache): the allocated blocks of every file, directory and link,
// each counted once (hard links) and each at least diskEntryCharge, so that
// a run cannot exhaust the file system's inodes with empty files either.
// /tmp, /dev and /dev/shm are tmpfs of a fixed size, memory rather than
// disk; they are bounded by their sizes (WithTmpSize), not by this limit.

// Bounds of a measurement.
const (
	// diskEntryCharge is the least an entry counts for: a block of the
	// usual file systems, what a small file allocates there anyway.
	diskEntryCharge = 4096
	// maxDiskDepth bounds the directory depth of a measured tree. The walk
	// holds one descriptor per level; a deeper tree cannot be measured and
	// counts as over the limit.
	maxDiskDepth = 1024
	// diskTick is how often the watcher compares the file systems' usage.
	diskTick = 20 * time.Millisecond
	// diskPeriodMin is the least time between two measurements on the
	// regular period; the period grows to diskPeriodFactor measurements
	// when measuring takes long, so that the watcher's share of a CPU stays
	// small whatever the tree.
	diskPeriodMin    = time.Second
	diskPeriodFactor = 10
	// diskUrgentFactor is the least time between two measurements
	// triggered by the file systems' growth, in measurement durations.
	diskUrgentFactor = 4
)

// errTooDeep reports a tree deeper than maxDiskDepth.
var errTooDeep = fmt.Errorf("directory tree deeper than %d levels", maxDiskDepth)

// errUnmeasurable reports a directory of a tree that cannot be read.
var errUnmeasurable = errors.New("directory cannot be measured")

// treeUsage measures the tree at root: the bytes its entries take (blocks,
// each entry at least diskEntryCharge, hard links once). It does not follow
// symbolic links or cross into other file systems, and skips what
// disappears while it walks. It stops with an error past maxBytes (the
// tree is over its bound whatever the rest holds: the usage returned is then
// the part measured) and at maxDiskDepth.
func treeUsage(root string, maxBytes int64) (int64, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return 0, err
	}
	w := &treeWalk{dev: st.Dev, max: maxBytes}
	w.add(&st)
	err = w.dir(os.NewFile(uintptr(fd), root), 1)
	return w.used, err
}

type treeWalk struct {
	dev   uint64
	max   int64
	used  int64
	links map[[2]uint64]bool // hard-linked inodes seen
}

var errOverLimit = errors.New("over the limit")

func (w *treeWalk) add(st *unix.Stat_t) {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		if w.links[key] {
			return
		}
		if w.links == nil {
			w.links = map[[2]uint64]bool{}
		}
		w.links[key] = true
	}
	w.used += max(st.Blocks*512, diskEntryCharge)
}

// dir measures the entries of the open directory d (which it closes),
// depth levels below the root. Entries are read in batches, so a directory
// of millions of names costs no more memory than a small one.
func (w *treeWalk) dir(d *os.File, depth int) error {
	defer d.Close()
	fd := int(d.Fd())
	for {
		names, rerr := d.Readdirnames(256)
		for _, name := range names {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue // removed meanwhile
			}
			if st.Dev != w.dev {
				continue // a mount point: not this tree's
			}
			w.add(&st)
			if w.used > w.max {
				return errOverLimit
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			if depth >= maxDiskDepth {
				return errTooDeep
			}
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			switch {
			case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
				continue // replaced or removed meanwhile
			case err != nil:
				// A directory the agent cannot read (a rootless agent
				// outside the user namespace that owns the files) would
				// hide what is below it: not measurable, not small.
				return fmt.Errorf("%w: %s: %w", errUnmeasurable, name, err)
			}
			if err := w.dir(os.NewFile(uintptr(sub), name), depth+1); err != nil {
				return err
			}
		}
		if rerr != nil {
			return nil // io.EOF, or the directory went away
		}
	}
}

// diskWatch enforces one run's disk limit (see above).
type diskWatch struct {
	limit int64
	roots []string
	base  []int64 // usage of each root when the run started

	exceeded chan struct{} // closed once the run is over its limit
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once // closes exceeded
	stopOnce sync.Once

	mu     sync.Mutex
	used   int64  // the last measurement, beyond the base
	reason string // why the run is over its limit
}

// newDiskWatch measures the roots (their base usage) and starts watching
// them. roots[0] may be an empty upper; the others are writable mounts.
func newDiskWatch(limit int64, roots []string) (*diskWatch, error) {
	w := &diskWatch{
		limit: limit, roots: roots, base: make([]int64, len(roots)),
		exceeded: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
	}
	for i, r := range roots {
		// The base is bounded by nothing the run did: measure it whole,
		// up to a bound far beyond any real cache.
		n, err := treeUsage(r, 1<<62)
		if err != nil {
			return nil, fmt.Errorf("measuring %s: %w", r, err)
		}
		w.base[i] = n
	}
	go w.loop()
	return w, nil
}

// measure returns what the run added to its roots, and an error when the
// trees could not be measured or are over the limit.
func (w *diskWatch) measure() (int64, error) {
	var total int64
	for i, r := range w.roots {
		n, err := treeUsage(r, w.base[i]+w.limit-total)
		total += max(n-w.base[i], 0)
		switch {
		case errors.Is(err, errOverLimit):
			return total, nil // total > limit
		case errors.Is(err, errTooDeep), errors.Is(err, errUnmeasurable):
			return total, err
		case err != nil && !errors.Is(err, unix.ENOENT):
			return total, err
		}
	}
	return total, nil
}

// check measures once and reports whether the run is over its limit;
// then it closes exceeded.
func (w *diskWatch) check() bool {
	used, err := w.measure()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.used = used
	switch {
	case errors.Is(err, errTooDeep), errors.Is(err, errUnmeasurable):
		// What cannot be measured counts as over the limit.
		w.reason = err.Error()
	case err == nil && used > w.limit:
		w.reason = fmt.Sprintf("%d bytes written, limit %d", used, w.limit)
	default:
		// Within the limit, or unmeasurable for another reason (the next
		// try may do).
		return false
	}
	w.once.Do(func() { close(w.exceeded) })
	return true
}

// fsUsage sums the used bytes (blocks, and inodes at diskEntryCharge) of
// the distinct file systems holding the roots.
func (w *diskWatch) fsUsage() int64 {
	seen := map[[2]int32]bool{}
	var total int64
	for _, r := range w.roots {
		var s unix.Statfs_t
		if unix.Statfs(r, &s) != nil || seen[s.Fsid.Val] {
			continue
		}
		seen[s.Fsid.Val] = true
		total += int64(s.Blocks-s.Bfree)*s.Bsize + int64(s.Files-s.Ffree)*diskEntryCharge
	}
	return total
}

func (w *diskWatch) loop() {
	defer close(w.done)
	tick := time.NewTicker(diskTick)
	defer tick.Stop()
	var took time.Duration // the last measurement's
	fsAt, last := w.fsUsage(), time.Now()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		since := time.Since(last)
		w.mu.Lock()
		used := w.used
		w.mu.Unlock()
		due := since >= max(diskPeriodMin, diskPeriodFactor*took)
		// The file systems grew by more than this run has left: if the
		// growth is this run's, it is over its limit.
		urgent := used+w.fsUsage()-fsAt > w.limit && since >= diskUrgentFactor*took
		if !due && !urgent {
			continue
		}
		fsAt = w.fsUsage()
		start := time.Now()
		if w.check() {
			return
		}
		last = time.Now()
		took = last.Sub(start)
	}
}

// finish stops the watcher and, unless it found the run over its limit
// already, measures a last time. It reports whether the run went over its
// limit, what it added at the last measurement, and why it is over.
func (w *diskWatch) finish() (exceeded bool, used int64, reason string) {
	w.halt()
	select {
	case <-w.exceeded:
	default:
		w.check()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reason != "", w.used, w.reason
}

// halt stops the watcher; it is idempotent.
func (w *diskWatch) halt() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// DiskUsage returns the bytes the tree at root takes as Limits.Disk counts
// them: allocated blocks, every entry at least 4 KiB, hard links once,
// without following symbolic links or crossing into other file systems. A
// tree deeper than 1024 levels is an error.
func DiskUsage(root string) (int64, error) {
	return treeUsage(root, 1<<62)
}
