package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/opencontainers/cgroups"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// Several Managers — one per process: the agent, `vagent build`, `vagent
// builder build` — may use one data directory at once. Each has an
// instance directory of its own, held locked while it lives:
//
//	<data>/lock               shared flock of every live Manager
//	<data>/join.lock          held while a Manager joins (recovers, locks)
//	<data>/m/<inst>/          one Manager: flock'd by it (the directory itself)
//	  owner.json              its pid, id range and cgroup parent (ownerInfo)
//	  state/                  libcontainer state of its containers
//	  runs/<id>/              upper, work and merged rootfs of a run
//	  kept/<id>/              uppers of finished runs not yet released
//	  netns/<id>              network namespaces of isolated runs, bind-mounted
//
// A Manager recovers only what dead ones left: an instance directory whose
// lock it can take belongs to a process that is gone (the kernel dropped
// its lock), and its containers are killed and destroyed, its cgroups,
// mounts and directories removed. A Manager that can take the data
// directory's lock exclusively is alone on it: it also removes what an
// older vagent, one Manager per data directory, left directly in <data>
// (state/, runs/, kept/ and the cgroup parent vagent-<hash>). Older vagents
// took that lock exclusively, so they and newer ones never run side by
// side on one directory.

const (
	instancesDir = "m"
	ownerFile    = "owner.json"
	joinLock     = "join.lock"
)

// ownerInfo is an instance's owner.json.
type ownerInfo struct {
	// PID is the owner's pid; a rootless one's, in its own pid namespace
	// (1: it is the namespace's init).
	PID int `json:"pid"`
	// IDBase and IDSize are container root's id and the range's size: host
	// ids, or a rootless owner's ids in its user namespace (1-65536, the
	// user's subordinate ids on the host).
	IDBase uint32 `json:"id_base"`
	IDSize uint32 `json:"id_size"`
	// Rootless: an ordinary user's agent, root of its user namespace.
	Rootless bool `json:"rootless,omitempty"`
	// Cgroup is the parent of the instance's run cgroups, relative to the
	// root of each hierarchy (v1) or of the cgroup2 mount (v2).
	Cgroup string `json:"cgroup,omitempty"`
}

// defaultCgroupParent is the cgroup parent of older vagents' Managers on
// the data directory abs; instances add their own suffix to it.
func defaultCgroupParent(abs string) string {
	sum := sha256.Sum256([]byte(abs))
	return "vagent-" + hex.EncodeToString(sum[:6])
}

// joinDataDir takes the data directory's shared lock. When the lock can
// be had exclusively first, no other Manager lives: everything dead
// instances and older vagents left is recovered before the lock is
// turned into a shared one; otherwise only dead instances are recovered.
// Managers join one at a time, under joinLock: so a Manager holds the
// data directory's lock exclusively only while it holds joinLock too, and
// an exclusive holder seen from under joinLock is an older vagent
// (ErrLocked), never a Manager recovering.
func (m *Manager) joinDataDir() (retErr error) {
	join, err := os.OpenFile(filepath.Join(m.dataDir, joinLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer join.Close()
	if _, err := lockfile.Lock(join, true, true); err != nil {
		return fmt.Errorf("locking %s: %w", m.dataDir, err)
	}
	lock, err := os.OpenFile(filepath.Join(m.dataDir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			lock.Close()
		}
	}()
	alone, err := lockfile.Lock(lock, true, false)
	if err != nil {
		return fmt.Errorf("locking %s: %w", m.dataDir, err)
	}
	if alone {
		if err := m.recoverAll(); err != nil {
			return fmt.Errorf("cleaning up after an earlier run: %w", err)
		}
		if _, err := lockfile.Lock(lock, false, true); err != nil {
			return fmt.Errorf("locking %s: %w", m.dataDir, err)
		}
	} else {
		ok, err := lockfile.Lock(lock, false, false)
		if err != nil {
			return fmt.Errorf("locking %s: %w", m.dataDir, err)
		}
		if !ok {
			return fmt.Errorf("%s: %w", m.dataDir, ErrLocked)
		}
		if err := m.recoverDead(); err != nil {
			return fmt.Errorf("cleaning up after an earlier run: %w", err)
		}
	}
	m.lock = lock
	return nil
}

// recoverAll removes what older vagents and dead instances left; no other
// Manager lives.
func (m *Manager) recoverAll() error {
	var errs []error
	legacy := &Manager{opts: m.opts, dataDir: m.dataDir, rootless: m.rootless,
		stateDir: filepath.Join(m.dataDir, "state"), runsDir: filepath.Join(m.dataDir, "runs"), keptDir: filepath.Join(m.dataDir, "kept"),
		netnsDir: filepath.Join(m.dataDir, "netns")}
	if !m.rootless {
		name := m.opts.cgroupParent
		if name == "" {
			name = defaultCgroupParent(m.dataDir)
		}
		if p, err := cgroupParentPath(name); err == nil {
			legacy.cg = &cgroupSetup{parent: p}
		}
	}
	// Each dead instance first, in its order (containers, cgroups, pasta,
	// then mounts), then what an older vagent left at the top, and any
	// mount still below the data directory.
	errs = append(errs, m.recoverDead())
	errs = append(errs, legacy.recover())
	if legacy.cg != nil {
		errs = append(errs, removeCgroupParent(legacy.cg.parent))
	}
	return errors.Join(errs...)
}

// recoverDead recovers and removes every instance directory no live
// Manager holds.
func (m *Manager) recoverDead() error {
	dir := filepath.Join(m.dataDir, instancesDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue // removed meanwhile
		}
		ok, err := lockfile.Lock(f, true, false)
		if err == nil && ok {
			errs = append(errs, m.recoverInstance(p))
		}
		f.Close()
	}
	return errors.Join(errs...)
}

// recoverInstance kills and removes what the dead instance in dir left.
func (m *Manager) recoverInstance(dir string) error {
	dead := &Manager{opts: m.opts, dataDir: dir, rootless: m.rootless,
		stateDir: filepath.Join(dir, "state"), runsDir: filepath.Join(dir, "runs"), keptDir: filepath.Join(dir, "kept"),
		netnsDir: filepath.Join(dir, "netns")}
	if o, err := readOwner(dir); err == nil {
		if o.Cgroup != "" {
			dead.cg = &cgroupSetup{parent: o.Cgroup}
		}
		m.opts.log.WithField("pid", o.PID).WithField("instance", filepath.Base(dir)).Debug("recovering what a dead vagent process left")
	}
	if err := dead.recover(); err != nil {
		return err
	}
	var errs []error
	if dead.cg != nil {
		errs = append(errs, removeCgroupParent(dead.cg.parent))
	}
	errs = append(errs, lockfile.RemoveTree(dir))
	return errors.Join(errs...)
}

// newInstance creates and locks the Manager's own instance directory.
func (m *Manager) newInstance() error {
	dir := filepath.Join(m.dataDir, instancesDir)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	p, lock, err := lockfile.MkdirTemp(dir, "")
	if err != nil {
		return err
	}
	// Runs' rootfs lie below it: the mapped root must search it.
	if err := os.Chmod(p, 0o711); err != nil {
		lock.Close()
		os.Remove(p)
		return err
	}
	m.instDir, m.instLock = p, lock
	m.stateDir = filepath.Join(p, "state")
	m.runsDir = filepath.Join(p, "runs")
	m.keptDir = filepath.Join(p, "kept")
	m.netnsDir = filepath.Join(p, "netns")
	return nil
}

// removeInstance removes the Manager's instance directory, then drops its
// lock. Kept uppers not yet released keep it: the next Manager removes it.
func (m *Manager) removeInstance() error {
	if m.instDir == "" {
		return nil
	}
	var err error
	if ents, rerr := os.ReadDir(m.keptDir); rerr != nil || len(ents) == 0 {
		err = lockfile.RemoveTree(m.instDir)
	}
	m.instLock.Close()
	m.instDir, m.instLock = "", nil
	return err
}

// writeOwner records the instance's owner.
func (m *Manager) writeOwner() error {
	o := ownerInfo{PID: os.Getpid(), IDBase: m.rootUID, IDSize: m.idSize, Rootless: m.rootless}
	if !m.cg.undelegated { // rootless: a delegated cgroup's (below the agent's own)
		o.Cgroup = m.cg.parent
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return lockfile.WriteFile(filepath.Join(m.instDir, ownerFile), b, lockfile.WriteOptions{Perm: 0o644})
}

func readOwner(dir string) (ownerInfo, error) {
	var o ownerInfo
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return o, err
	}
	return o, json.Unmarshal(b, &o)
}

// checkPeers refuses to run beside a live Manager of the data directory
// that maps another id range, or that is rootless when m is not or the
// other way round: the files they share (the package cache, the images)
// would belong to one range or the other.
func (m *Manager) checkPeers() error {
	dir := filepath.Join(m.dataDir, instancesDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if p == m.instDir {
			continue
		}
		o, err := readOwner(p)
		if err == nil && o.IDSize != 0 && o.Rootless != m.rootless {
			who := map[bool]string{false: "root's", true: "an ordinary user's (rootless)"}
			return fmt.Errorf("another vagent (pid %d), %s, uses %s; this one is %s: %w",
				o.PID, who[o.Rootless], m.dataDir, who[m.rootless], ErrIDRangeInUse)
		}
		if err != nil || o.IDSize == 0 || o.PID == os.Getpid() {
			// Starting, or gone; a Manager of this process (tests) may
			// differ. (Rootless owners are all pid 1 of their own pid
			// namespaces, and all map the user's subordinate ids.)
			continue
		}
		if o.IDBase != m.rootUID || o.IDSize != m.idSize {
			return fmt.Errorf("another vagent (pid %d) uses %s with host ids %d-%d, this one would map %d-%d: %w",
				o.PID, m.dataDir, o.IDBase, uint64(o.IDBase)+uint64(o.IDSize)-1,
				m.rootUID, uint64(m.rootUID)+uint64(m.idSize)-1, ErrIDRangeInUse)
		}
	}
	return nil
}

// cgroupParentPath is where setupCgroups puts a parent named name, without
// creating it or moving any process.
func cgroupParentPath(name string) (string, error) {
	if !cgroups.IsCgroup2UnifiedMode() {
		return "/" + name, nil
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	mi, err := readMountinfo()
	if err != nil {
		return "", err
	}
	own, err := ownCgroupV2(self, mi, unifiedMountpoint)
	if err != nil {
		return "", err
	}
	home, _ := planV2(unifiedMountpoint, own)
	return path.Join(home, name), nil
}
