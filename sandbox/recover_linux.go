package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// recover kills and removes whatever a dead Manager left in m's
// directories: containers, the cgroups below m.cg.parent (when known),
// mounts under m.dataDir, and the state, run and kept directories.
func (m *Manager) recover() error {
	var errs []error
	if entries, err := os.ReadDir(m.stateDir); err == nil {
		for _, e := range entries {
			if err := m.destroyLeftover(e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if m.cg != nil && !m.cg.undelegated {
		if err := killCgroupChildren(m.cg.parent); err != nil {
			errs = append(errs, err)
		}
	}
	// pasta dies with the agent (its parent-death signal); one that did
	// not is killed before its namespace is unmounted below.
	if err := m.killLeftoverPasta(); err != nil {
		errs = append(errs, err)
	}
	// Rootless, the mounts of an agent that died went with its mount
	// namespace, and its containers and pasta with its pid namespace.
	if err := unmountUnder(m.dataDir, m.opts.log, 0); err != nil {
		errs = append(errs, err)
		// Never remove directories that may still have mounts under them.
		return errors.Join(errs...)
	}
	for _, d := range []string{m.runsDir, m.keptDir, m.netnsDir, m.stateDir} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// destroyLeftover kills and destroys the container id found in the state
// directory.
func (m *Manager) destroyLeftover(id string) error {
	log := m.opts.log.WithField("container", id)
	c, err := libcontainer.Load(m.stateDir, id)
	if err != nil {
		log.WithError(err).Warn("removing unreadable container state")
		return os.RemoveAll(filepath.Join(m.stateDir, id))
	}
	log.Info("killing container left by an earlier run")
	if err := c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		log.WithError(err).Warn("killing leftover container")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := c.Status()
		if err != nil || st == libcontainer.Stopped {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Destroy(); err != nil {
		return fmt.Errorf("destroying leftover container %s: %w", id, err)
	}
	return nil
}

// cgroupRoots returns the mount points of every cgroup hierarchy mounted at
// its root (v1 controllers, named hierarchies and cgroup2).
func cgroupRoots() ([]string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	seen := map[string]bool{}
	var roots []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, pf := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(pf) < 1 || (pf[0] != "cgroup" && pf[0] != "cgroup2") || fields[3] != "/" {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if !seen[mp] {
			seen[mp] = true
			roots = append(roots, mp)
		}
	}
	return roots, sc.Err()
}

// mountPoints returns the mount points in the current mount namespace.
//
// It reads the calling thread's view: libcontainer may leave the process's
// main thread in a container's mount namespace (a locked goroutine that
// exits on the main thread wedges it), which /proc/self would show.
func mountPoints() ([]string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 {
			mps = append(mps, unescapeMountinfo(fields[4]))
		}
	}
	return mps, sc.Err()
}

// unescapeMountinfo decodes the octal escapes (\040 etc.) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string, log logrus.FieldLogger, depth int) error {
	mps, err := mountPoints()
	if err != nil {
		return err
	}
	var under []string
	for _, mp := range mps {
		if strings.HasPrefix(mp, dir+"/") {
			under = append(under, mp)
		}
	}
	sort.Slice(under, func(i, j int) bool { return len(under[i]) > len(under[j]) })
	var errs []error
	for _, mp := range under {
		log.WithField("mount", mp).Info("unmounting leftover")
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
		}
	}
	if len(errs) == 0 && len(under) > 0 {
		// Stacked mounts show up again: go on until none is left.
		if again, err := mountPoints(); err == nil {
			for _, mp := range again {
				if strings.HasPrefix(mp, dir+"/") {
					if depth > 3 {
						return fmt.Errorf("mount %s does not go away", mp)
					}
					return unmountUnder(dir, log, depth+1)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// killCgroupChildren kills every process in, and removes, every cgroup
// below the parent in each hierarchy. The parent itself stays.
func killCgroupChildren(parent string) error {
	roots, err := cgroupRoots()
	if err != nil {
		return err
	}
	var errs []error
	for _, root := range roots {
		p := filepath.Join(root, parent)
		entries, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() {
				if err := killRemoveCgroup(filepath.Join(p, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// killRemoveCgroup SIGKILLs the processes of dir and its descendants and
// removes them, deepest first.
func killRemoveCgroup(dir string) error {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			if err := killRemoveCgroup(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	var err error
	for i := 0; i < 100; i++ {
		if data, rerr := os.ReadFile(filepath.Join(dir, "cgroup.procs")); rerr == nil {
			for _, f := range strings.Fields(string(data)) {
				if pid, perr := strconv.Atoi(f); perr == nil && pid > 0 {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
		// cgroup v1 freezer: a frozen cgroup's processes cannot die.
		_ = os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
		if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("removing cgroup %s: %w", dir, err)
}

// removeCgroupParent removes the Manager's parent cgroup in every hierarchy.
func removeCgroupParent(parent string) error {
	roots, err := cgroupRoots()
	if err != nil {
		return err
	}
	var errs []error
	for _, root := range roots {
		if err := unix.Rmdir(filepath.Join(root, parent)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EROFS) {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", filepath.Join(root, parent), err))
		}
	}
	return errors.Join(errs...)
}

// killLeftoverPasta kills the pasta processes that runs of a killed agent
// recorded in their run directories, and waits until they are gone. A pid
// is only signalled while its command line names the run's namespace: a
// pid reused by another process is left alone.
func (m *Manager) killLeftoverPasta() error {
	files, _ := filepath.Glob(filepath.Join(m.runsDir, "*", pastaPidFile))
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		ns := filepath.Join(m.netnsDir, filepath.Base(filepath.Dir(f)))
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || !slices.Contains(strings.Split(string(cmdline), "\x00"), ns) {
			continue
		}
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone already
		}
		m.opts.log.WithField("pid", pid).Info("killing pasta left by an earlier run")
		if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("killing leftover pasta %d: %w", pid, err))
		} else {
			// The pidfd becomes readable when the process has exited.
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, 5000); err != nil {
				errs = append(errs, fmt.Errorf("waiting for leftover pasta %d: %w", pid, err))
			}
		}
		unix.Close(pidfd)
	}
	return errors.Join(errs...)
}
