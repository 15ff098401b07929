package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/opencontainers/cgroups"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// LowerShift returns the id shift every Spec.Lower of this process's
// Managers must carry: 0 when Managers idmap the lower (the host's user
// namespace: Spec.Lower is unshifted, owned by host root), and in rootless
// mode — as root of a user namespace, where a host file system cannot be
// idmapped — the container root's id, 1: a tree unpacked with its owners
// shifted by it (oci.WithIDShift(1, 1)) shows the image's owners in the
// container.
func LowerShift() uint32 {
	if InUserNamespace() {
		return 1
	}
	return 0
}

// Shifted reports whether m runs builds on shifted lowers (LowerShift).
func (m *Manager) lowerShift() uint32 {
	if m.rootless {
		return m.rootUID
	}
	return 0
}

// checkLowerOwner refuses, in rootless mode, a lower whose root directory
// is not the container root's: an unshifted tree would show every file
// owned by nobody, and container root could change none.
func (m *Manager) checkLowerOwner(lower string) error {
	if !m.rootless {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(lower, &st); err != nil {
		return fmt.Errorf("%w: lower: %w", ErrInvalidSpec, err)
	}
	if st.Uid != m.rootUID {
		return fmt.Errorf("%w: lower %s is owned by uid %d, not by container root (%d): rootless builds need trees unpacked with their owners shifted by %d (LowerShift)",
			ErrInvalidSpec, lower, st.Uid, m.rootUID, m.lowerShift())
	}
	return nil
}

// Unlimited says why the runs of m get no cgroup limits — a rootless
// agent without a delegated cgroup (a limit is refused then, with
// ErrLimitUnavailable) — or returns nil.
func (m *Manager) Unlimited() error {
	if m.cg.undelegated {
		return m.cg.enableErr
	}
	return nil
}

// CgroupDelegated tells, for a rootless agent (as root of its user
// namespace), whether its cgroup is delegated to it so that Managers can
// apply cgroup limits to their runs — nil — or why not. For root it is
// nil. It changes nothing (New does what it needs).
func CgroupDelegated() error {
	if !InUserNamespace() {
		return nil
	}
	return delegationOnce()
}

var delegationOnce = sync.OnceValue(func() error {
	if !cgroups.IsCgroup2UnifiedMode() {
		return errors.New(undelegatedV1)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return err
	}
	mi, err := readMountinfo()
	if err != nil {
		return err
	}
	own, err := ownCgroupV2(self, mi, unifiedMountpoint)
	if err != nil {
		return err
	}
	home, _ := planV2(unifiedMountpoint, own)
	if unix.Access(filepath.Join(unifiedMountpoint, home, "cgroup.procs"), unix.W_OK) != nil ||
		unix.Access(filepath.Join(unifiedMountpoint, home, "cgroup.subtree_control"), unix.W_OK) != nil {
		return fmt.Errorf("the agent's cgroup %s is not delegated to it: %s", home, undelegatedHint)
	}
	return nil
})

// undelegatedV1 says why cgroup v1 gives a rootless agent no limits.
const undelegatedV1 = "cgroup v1 is not delegated to ordinary users: boot the host with cgroup v2 " +
	"(systemd.unified_cgroup_hierarchy=1) and " + undelegatedHint

// undelegatedHint says how a rootless agent gets a cgroup of its own.
const undelegatedHint = "run the agent in a delegated cgroup: as a systemd user service with Delegate=yes " +
	"(contrib/systemd/vagent-user.service), or with systemd-run --user -p Delegate=yes --scope vagent …"

// setupRootlessCgroups is setupCgroups for an agent in a user namespace:
// the runs' cgroups go below the agent's own cgroup when that cgroup (v2)
// is delegated to the user; otherwise runs get no cgroup of their own and
// no limit can be applied (checkLimits refuses them by name).
func setupRootlessCgroups(name string, log logrus.FieldLogger) *cgroupSetup {
	none := func(why error) *cgroupSetup {
		return &cgroupSetup{
			v2: cgroups.IsCgroup2UnifiedMode(), parent: "/" + name, controllers: map[string]bool{},
			undelegated: true, enableErr: why,
		}
	}
	if !cgroups.IsCgroup2UnifiedMode() {
		return none(errors.New(undelegatedV1))
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return none(err)
	}
	mi, err := readMountinfo()
	if err != nil {
		return none(err)
	}
	own, err := ownCgroupV2(self, mi, unifiedMountpoint)
	if err != nil {
		return none(err)
	}
	if unix.Access(filepath.Join(unifiedMountpoint, own, "cgroup.procs"), unix.W_OK) != nil {
		return none(fmt.Errorf("the agent's cgroup %s is not delegated to it: %s", own, undelegatedHint))
	}
	cg, err := setupCgroupV2(unifiedMountpoint, own, name)
	if err != nil {
		log.WithError(err).Debug("rootless: no cgroup for the runs")
		return none(fmt.Errorf("the agent's cgroup %s is not delegated to it (%w): %s", own, err, undelegatedHint))
	}
	if len(cg.controllers) == 0 {
		cg.enableErr = fmt.Errorf("%w; %s", cg.enableErr, undelegatedHint)
	}
	return cg
}

// runsMount is where a rootless Manager mounts its runs' root filesystems.
// A container's init resolves its root filesystem's path as container
// root, a subordinate id, which must be able to search every directory on
// the way; the data directory lies in a home directory, which rarely lets
// other ids through (Debian's are 0700). So the mount points are in a
// tmpfs of the agent's own mount namespace, mounted on an empty directory
// of /tmp that only the agent's namespace sees into. The directory is
// flock'd while the Manager lives (systemd-tmpfiles leaves locked
// directories alone), and removed by Close or, after a crash, by the next
// Manager of the user.
type runsMount struct {
	dir  string
	lock *os.File
}

const runsMountPrefix = "vagent-runs-"

// runsMountParents are where the directory may go: world-writable, sticky,
// searchable all the way.
var runsMountParents = []string{"/tmp", "/var/tmp", "/dev/shm"}

func newRunsMount(log logrus.FieldLogger) (_ *runsMount, retErr error) {
	parent := ""
	for _, p := range runsMountParents {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() && fi.Mode()&os.ModeSticky != 0 && fi.Mode().Perm()&0o003 == 0o003 && checkSearchable(p) == nil {
			parent = p
			break
		}
	}
	if parent == "" {
		return nil, fmt.Errorf("rootless mode needs a world-writable sticky directory for the runs' mount points (one of %s)", strings.Join(runsMountParents, ", "))
	}
	removeStaleRunsMounts(parent, log)
	dir, err := os.MkdirTemp(parent, runsMountPrefix)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = os.Remove(dir)
		}
	}()
	lock, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if _, err := lockfile.Lock(lock, false, true); err != nil {
		lock.Close()
		return nil, err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0711,size=4m"); err != nil {
		lock.Close()
		return nil, fmt.Errorf("mounting the runs' tmpfs on %s: %w", dir, err)
	}
	return &runsMount{dir: dir, lock: lock}, nil
}

// close unmounts and removes the directory.
func (r *runsMount) close() error {
	err := unix.Unmount(r.dir, unix.MNT_DETACH)
	if errors.Is(err, unix.EINVAL) {
		err = nil
	}
	if err == nil {
		err = os.Remove(r.dir)
	}
	r.lock.Close()
	if err != nil {
		return fmt.Errorf("removing %s: %w", r.dir, err)
	}
	return nil
}

// removeStaleRunsMounts removes the directories of dead rootless Managers
// of this user: its own (namespace root's), empty on the host, and locked
// by no one.
func removeStaleRunsMounts(parent string, log logrus.FieldLogger) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), runsMountPrefix) {
			continue
		}
		p := filepath.Join(parent, e.Name())
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) {
			continue
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		d := os.NewFile(uintptr(fd), p)
		if ok, err := lockfile.Lock(d, true, false); err == nil && ok {
			if err := unix.Rmdir(p); err == nil {
				log.WithField("dir", p).Debug("removed the runs' mount directory of a dead agent")
			}
		}
		d.Close()
	}
}
