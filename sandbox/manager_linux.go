package sandbox

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Manager runs sandboxes under one data directory. Several Managers, in
// this process or others, may share a data directory: each works in an
// instance directory of its own (see instance_linux.go).
type Manager struct {
	opts     options
	dataDir  string
	instDir  string // this Manager's instance directory
	stateDir string // libcontainer state root
	runsDir  string // per-run directories
	keptDir  string // kept uppers handed to callers
	netnsDir string // network namespaces of isolated runs, bind-mounted

	// rootless: the agent is root of a user namespace, not host root
	// (rootless.go): lowers are shifted instead of idmapped, overlays use
	// user.overlay xattrs, cgroups only where delegated, and the runs'
	// root filesystems are mounted below mntDir.
	rootless         bool
	mntDir           *runsMount
	cg               *cgroupSetup // where run cgroups go, what they can limit
	rootUID, rootGID uint32       // host ids of container root
	idSize           uint32
	usernsFD         *os.File // user namespace for idmapped lowers; nil without
	lock             *os.File // the data directory's lock, shared
	instLock         *os.File // the instance directory, locked exclusively

	mu      sync.Mutex
	closed  bool
	active  sync.WaitGroup
	reapers sync.WaitGroup // killed pasta processes not yet reaped
}

// New opens a Manager on dataDir (created if missing). Other Managers, of
// this or other processes, may use the same directory at once; New first
// cleans up whatever dead ones left behind: their running containers are
// killed and destroyed, their cgroups, mounts, upper and state directories
// removed. Live Managers of the directory must map the same id range
// (ErrIDRangeInUse); an older vagent that holds the directory alone is
// ErrLocked.
func New(dataDir string, opts ...Option) (_ *Manager, retErr error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.seccomp && !SeccompSupported {
		return nil, ErrNoSeccomp
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: running as uid %d: call EnterUserNamespace first (rootless mode needs /etc/subuid and newuidmap)", ErrRootless, os.Geteuid())
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o711); err != nil {
		return nil, err
	}
	// libcontainer refuses a rootfs path through a symbolic link: a data
	// directory reached through one (e.g. /var/lib/vagent -> /srv/vagent)
	// is used by its real path.
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, err
	}
	m := &Manager{
		opts:     o,
		dataDir:  abs,
		rootless: InUserNamespace(),
		idSize:   o.idSize,
	}
	switch {
	case m.rootless:
		// The ids after namespace root, which newuidmap mapped to the
		// user's subordinate ids; the lowers are shifted (LowerShift):
		// a host file system cannot be idmapped from a user namespace.
		r := IDRange{Base: o.uidBase, Size: o.idSize}
		if !o.idMapSet {
			if r, err = rootlessIDRange(); err != nil {
				return nil, err
			}
		} else if err := checkMapped(r); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRootless, err)
		}
		m.rootUID, m.rootGID, m.idSize = r.Base, r.Base, r.Size
		m.opts.userns = true
	case o.userns:
		m.rootUID, m.rootGID = o.uidBase, o.uidBase
	default:
		m.rootUID, m.rootGID, m.idSize = 0, 0, 0
	}
	if err := m.joinDataDir(); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			if m.cg != nil && !m.cg.undelegated {
				_ = removeCgroupParent(m.cg.parent) // fails while a leftover run is in it
			}
			if m.mntDir != nil {
				_ = m.mntDir.close()
			}
			_ = m.removeInstance()
			m.release()
		}
	}()
	if err := m.newInstance(); err != nil {
		return nil, fmt.Errorf("creating the instance directory: %w", err)
	}
	cgroupParent := o.cgroupParent
	if cgroupParent == "" {
		cgroupParent = defaultCgroupParent(abs) + "-" + filepath.Base(m.instDir)
	}

	var cg *cgroupSetup
	if m.rootless {
		cg = setupRootlessCgroups(cgroupParent, o.log)
	} else if cg, err = setupCgroups(cgroupParent); err != nil {
		return nil, fmt.Errorf("setting up cgroups: %w", err)
	}
	m.cg = cg
	if err := cg.checkLimits(o.limits); err != nil {
		return nil, fmt.Errorf("default limits: %w", err)
	}
	if cg.moved != "" {
		o.log.WithField("cgroup", cg.moved).Info("moved the agent into a leaf cgroup (cgroup v2 allows no processes in a cgroup that has limited children)")
	}
	if err := m.writeOwner(); err != nil {
		return nil, fmt.Errorf("recording the instance: %w", err)
	}
	if m.opts.userns {
		if err := m.checkPeers(); err != nil {
			return nil, err
		}
	}
	switch {
	case m.rootless:
		if m.mntDir, err = newRunsMount(o.log); err != nil {
			return nil, err
		}
	case o.userns:
		fd, err := newUsernsFD(o.uidBase, o.idSize)
		if err != nil {
			return nil, err
		}
		m.usernsFD = fd
	}

	if err := os.MkdirAll(m.stateDir, 0o711); err != nil {
		return nil, err
	}
	// runs/ and kept/ hold the uppers: files owned by container ids, setuid
	// ones included. Only root and the mapped root may enter runs/ (a
	// container's init resolves its rootfs below it as the mapped root),
	// only root kept/: no other host user can reach a file of a build.
	if err := privateDir(m.runsDir, int(m.rootUID), int(m.rootGID)); err != nil {
		return nil, err
	}
	if err := privateDir(m.keptDir, os.Geteuid(), os.Getegid()); err != nil {
		return nil, err
	}
	// netns/ holds the runs' network namespaces: root's, so that pasta,
	// which runs as root without CAP_DAC_OVERRIDE, can open them.
	if err := privateDir(m.netnsDir, os.Geteuid(), os.Getegid()); err != nil {
		return nil, err
	}
	// The init process resolves runs/<id>/rootfs as the mapped root, which
	// needs search permission on every ancestor of runs/ (rootless: the
	// root filesystems are mounted below mntDir instead, whose ancestors
	// are searchable, since a home directory rarely is).
	if m.opts.userns && !m.rootless {
		if err := checkSearchable(filepath.Dir(m.runsDir)); err != nil {
			return nil, err
		}
	}
	if exe, err := os.Executable(); err == nil && binaryCopiedPerStart(exe, m.stateDir) {
		m.opts.log.WithField("binary", exe).WithField("data_dir", abs).Warn("the data directory lies inside the directory of this binary: " +
			"every container start copies the binary (libcontainer cannot seal it with an overlay then), about 10 ms more per start on a small VM; " +
			"install the binary elsewhere (e.g. /usr/local/bin)")
	}
	m.opts.log.WithField("data_dir", abs).WithField("instance", filepath.Base(m.instDir)).WithField("cgroup_parent", m.cg.parent).
		WithField("cgroup_controllers", m.cg.describe()).Debug("sandbox manager ready")
	return m, nil
}

// binaryCopiedPerStart reports whether libcontainer must copy the binary
// for every container start. It protects the binary a container init runs
// from (CVE-2019-5736) with a read-only overlay whose layers are the
// binary's directory and the container's state directory, or, when those
// overlap (overlayfs refuses it with ELOOP), with a sealed in-memory copy
// of the whole binary: about 10 ms more per start on a small VM
// (BenchmarkStartTrue, vagent-nouserns-copiedbinary).
func binaryCopiedPerStart(exe, stateDir string) bool {
	dir := filepath.Dir(exe)
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	if s, err := filepath.EvalSymlinks(stateDir); err == nil {
		stateDir = s
	}
	rel, err := filepath.Rel(dir, stateDir)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// privateDir creates dir (and its parents) and makes it mode 0700, owned
// by uid and gid, without following a symbolic link at dir.
func privateDir(dir string, uid, gid int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if os.Geteuid() == 0 {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// checkSearchable verifies that others may traverse every ancestor of dir.
func checkSearchable(dir string) error {
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by the container's mapped user (needs o+x)", p)
		}
		if p == "/" {
			return nil
		}
	}
}

// IDRange returns the host ids container ids map to: container uid c is
// host uid uid+c and container gid c host gid gid+c, for c < size. What a
// sandbox leaves in an upper directory is owned by ids in this range.
// Without a user namespace it is 0, 0 and the whole id space; rootless,
// the ids of the agent's user namespace, 1-65536 (the user's subordinate
// ids on the host). uid, gid are container root's: a host
// directory a build shares writably (a cache) is owned by them and
// bind-mounted without id mapping, so whatever the build writes there is
// owned by the unprivileged mapped ids on the host.
func (m *Manager) IDRange() (uid, gid, size uint32) {
	if !m.opts.userns {
		return 0, 0, ^uint32(0)
	}
	return m.rootUID, m.rootGID, m.idSize
}

// Close removes the Manager's cgroup parents and its instance directory
// and leaves the data directory. Call it after every Run has returned;
// later Runs fail with ErrClosed. It waits until the pasta processes of
// isolated runs, killed when their runs ended, have exited. Kept uppers
// that were not released are removed by the next New on the same data
// directory.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.active.Wait()
	m.reapers.Wait()
	var err error
	if !m.cg.undelegated {
		err = removeCgroupParent(m.cg.parent)
	}
	if m.mntDir != nil {
		err = errors.Join(err, m.mntDir.close())
	}
	err = errors.Join(err, m.removeInstance())
	m.release()
	return err
}

func (m *Manager) release() {
	if m.usernsFD != nil {
		m.usernsFD.Close()
		m.usernsFD = nil
	}
	if m.instLock != nil {
		m.instLock.Close()
		m.instLock = nil
	}
	if m.lock != nil {
		m.lock.Close()
		m.lock = nil
	}
}

// begin registers a run; it fails after Close.
func (m *Manager) begin() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.active.Add(1)
	return nil
}

// newID returns a fresh container id.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "vagent-" + hex.EncodeToString(b[:])
}
