package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// CheckHost probes whether this host can run sandboxes with the given
// options and data directory, and returns one Requirement per item:
// kernel, privileges, user namespaces, id range, data dir, overlayfs,
// idmapped lower, cgroups, build limits, isolated network, seccomp and disk
// space. It creates nothing that lasts: it makes and removes an isolated
// network as a run does, mounts and removes a test overlay under dataDir
// (or, when dataDir does not exist yet, under the directory that will hold
// it) and, as root, runs what a build runs: a Manager on a temporary
// directory there creates
// a build cgroup with the default limits (WithDefaultLimits; a limit on
// each controller when none are set) and starts a container in it that
// reads the limits back from inside.
func CheckHost(dataDir string, opts ...Option) ([]Requirement, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	f := hostFacts{
		root: os.Geteuid() == 0, uid: os.Geteuid(),
		idBase: o.uidBase, idSize: o.idSize,
		seccompBuilt: SeccompSupported,
		dataDir:      dataDir,
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		f.kernel = unix.ByteSliceToString(uts.Release[:])
	}
	f.seccompKernel = seccompInKernel()
	f.cgroupVersion, f.controllers, f.swapAccounting = probeCgroups()
	// The probes run in the data dir, or, when it does not exist yet, in
	// the directory it will be created in: a check creates nothing.
	probeDir, err := probeDirOf(dataDir)
	f.probeDir, f.dataDirErr = probeDir, err
	if err != nil {
		f.freeErr = errNotTried
	} else {
		var st unix.Statfs_t
		if err := unix.Statfs(probeDir, &st); err != nil {
			f.freeErr = err
		} else {
			f.freeBytes = st.Bavail * uint64(st.Bsize)
		}
	}
	if !f.root || InUserNamespace() {
		checkRootless(&f, o, opts)
		return evaluate(f), nil
	}
	var usernsFD *os.File
	usernsFD, f.userns = newUsernsFD(o.uidBase, o.idSize)
	f.idConflicts = SystemHostIDs.Conflicts(IDRange{Base: o.uidBase, Size: o.idSize})
	if usernsFD != nil {
		defer usernsFD.Close()
	}
	switch {
	case f.root && f.dataDirErr != nil:
		f.overlay, f.idmapped = errNotTried, errNotTried
	case f.root:
		f.overlay, f.idmapped = probeOverlay(probeDir, usernsFD)
	}
	switch {
	case f.dataDirErr != nil:
		f.limitsErr = errNotTried
	case f.overlay != nil || f.idmapped != nil || f.freeErr != nil:
		f.limitsErr = errors.New("not tried: no overlay over an idmapped lower")
	default:
		f.limits, f.limitsErr = probeLimits(context.Background(), probeDir, probedLimits(o.limits),
			append(opts, WithSeccomp(o.seccomp && SeccompSupported))...)
	}
	if f.dataDirErr != nil {
		f.networkErr = errNotTried
	} else {
		f.network, f.networkErr = probeNetwork(context.Background(), probeDir, o)
	}
	return evaluate(f), nil
}

// checkRootless probes what rootless mode needs: from the host (the
// user's subordinate ids, newuidmap, user namespaces) and, in the user
// namespace, what a build needs: its id range, overlayfs with userxattr,
// a delegated cgroup, and a build container with the limits.
func checkRootless(f *hostFacts, o options, opts []Option) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if host, ok := RootlessUser(); ok {
		uid = host
		if ns, err := selfNS(); err == nil {
			if g, ok := outside(ns.gidMap, 0); ok {
				gid = uint32(g)
			}
		}
	}
	rf := probeRootless(SystemHostFiles, uid, gid)
	f.rootless = &rf
	f.inUserNS = f.root && InUserNamespace()
	if !f.inUserNS {
		// Outside its namespace a process of the user can still create
		// one of its own ids: whether the kernel allows that at all.
		fd, err := newUsernsFD(uid, 1)
		if fd != nil {
			fd.Close()
		}
		rf.userns = err
		f.rootless = &rf
		f.networkErr = errors.New("not tried: needs the user namespace (see above)")
		return
	}
	if f.dataDirErr != nil {
		f.networkErr = errNotTried
	} else {
		f.network, f.networkErr = probeNetwork(context.Background(), f.probeDir, o)
	}
	r, err := rootlessIDRange()
	f.idBase, f.idSize, f.userns = r.Base, r.Size, err
	if ns, err := selfNS(); err == nil {
		if h, ok := outside(ns.uidMap, uint64(r.Base)); ok {
			f.hostIDs = IDRange{Base: uint32(h), Size: r.Size}.String()
		}
	}
	f.limitsWanted = !o.limits.cgroupZero()
	cg := setupRootlessCgroups("vagent-check-probe", o.log)
	if !cg.undelegated {
		_ = removeCgroupParent(cg.parent)
	}
	f.undelegated = nil
	if cg.undelegated {
		f.undelegated = cg.enableErr
	}
	f.controllers = cg.controllers
	switch {
	case f.dataDirErr != nil:
		f.overlay, f.limitsErr = errNotTried, errNotTried
		return
	default:
		f.overlay = probeRootlessOverlay(f.probeDir)
	}
	switch {
	case f.overlay != nil || f.freeErr != nil || f.userns != nil:
		f.limitsErr = errors.New("not tried: no overlay in the user namespace")
	case f.undelegated != nil && !f.limitsWanted:
		f.limits = "none: builds run without cgroup limits (no delegated cgroup)"
	default:
		f.limits, f.limitsErr = probeLimits(context.Background(), f.probeDir, probedLimits(o.limits),
			append(opts, WithSeccomp(o.seccomp && SeccompSupported))...)
	}
}

// probeRootlessOverlay mounts a test overlay under dir with the options of
// a rootless run.
func probeRootlessOverlay(dir string) error {
	tmp, err := os.MkdirTemp(dir, "check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	d := newRunDirs(tmp, tmp, "probe")
	for _, p := range []string{d.base, d.upper, d.work, d.rootfs, filepath.Join(tmp, "image")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	if strings.ContainsAny(tmp, ",:\\") {
		return fmt.Errorf("data directory path %q contains ',', ':' or '\\'", dir)
	}
	opts := "lowerdir=" + filepath.Join(tmp, "image") + ",upperdir=" + d.upper + ",workdir=" + d.work + overlayOptions(true)
	if err := unix.Mount("overlay", d.rootfs, "overlay", 0, opts); err != nil {
		return err
	}
	return unix.Unmount(d.rootfs, unix.MNT_DETACH)
}

// errNotTried: a probe that needs a writable data dir did not run.
var errNotTried = errors.New("not tried: the data dir is not writable")

// probeDirOf returns where the probes of dataDir run: dataDir itself when
// it exists, else the nearest existing directory above it, where `vagent
// run` will create it. An error says why builds could not write there.
func probeDirOf(dataDir string) (string, error) {
	dir := filepath.Clean(dataDir)
	for {
		fi, err := os.Stat(dir)
		switch {
		case err == nil && !fi.IsDir():
			return dir, fmt.Errorf("%s is not a directory", dir)
		case err == nil:
			if err := unix.Access(dir, unix.W_OK); err != nil {
				return dir, fmt.Errorf("%s is not writable: %w", dir, err)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(dir, &st); err == nil && st.Flags&unix.ST_RDONLY != 0 {
				return dir, fmt.Errorf("%s is on a read-only file system", dir)
			}
			return dir, nil
		case !errors.Is(err, os.ErrNotExist):
			return dir, err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir, err
		}
		dir = parent
	}
}

// probedLimits are the limits CheckHost's probe build gets: the configured
// ones, or one limit per controller.
func probedLimits(l Limits) Limits {
	if !l.cgroupZero() {
		return l
	}
	return Limits{Memory: 512 << 20, Pids: 1024, CPUWeight: 100, CPUQuota: 1, Disk: l.Disk}
}

func seccompInKernel() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	return strings.Contains(string(data), "\nSeccomp:")
}

// probeCgroups returns the cgroup version and the available controllers.
func probeCgroups() (version int, controllers map[string]bool, swap bool) {
	controllers = map[string]bool{}
	if cgroups.IsCgroup2UnifiedMode() {
		// The controllers of the agent's own cgroup: what a Manager can
		// enable for its runs (see cgroup_linux.go).
		dir := unifiedMountpoint
		self, err1 := os.ReadFile("/proc/self/cgroup")
		mi, err2 := readMountinfo()
		if err1 == nil && err2 == nil {
			if own, err := ownCgroupV2(self, mi, unifiedMountpoint); err == nil {
				home, _ := planV2(unifiedMountpoint, own)
				dir = filepath.Join(unifiedMountpoint, home)
			}
		}
		data, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		for _, c := range strings.Fields(string(data)) {
			controllers[c] = true
		}
		// memory.swap.max exists in non-root cgroups when swap is accounted.
		return 2, controllers, controllers["memory"]
	}
	roots, err := cgroupRoots()
	if err != nil || len(roots) == 0 {
		return 0, controllers, false
	}
	for _, r := range roots {
		for _, c := range strings.Split(filepath.Base(r), ",") {
			controllers[c] = true
		}
	}
	if controllers["cpu"] && controllers["cpuacct"] {
		controllers["cpu"] = true
	}
	return 1, controllers, fileExists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
}

// probeOverlay mounts a test overlay under dir, plain and over an idmapped
// lower.
func probeOverlay(dir string, usernsFD *os.File) (overlayErr, idmapErr error) {
	tmp, err := os.MkdirTemp(dir, "check-")
	if err != nil {
		return err, err
	}
	defer os.RemoveAll(tmp)
	d := newRunDirs(tmp, tmp, "probe")
	for _, p := range []string{d.base, d.lower, d.upper, d.work, d.rootfs, filepath.Join(tmp, "image")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err, err
		}
	}
	defer func() { _ = unmountRun(d) }()
	image := filepath.Join(tmp, "image")
	mount := func(lower string) error {
		opts := "lowerdir=" + lower + ",upperdir=" + d.upper + ",workdir=" + d.work + ",redirect_dir=off,metacopy=off,index=off"
		if err := unix.Mount("overlay", d.rootfs, "overlay", 0, opts); err != nil {
			return err
		}
		return unix.Unmount(d.rootfs, unix.MNT_DETACH)
	}
	if strings.ContainsAny(tmp, ",:\\") {
		err := fmt.Errorf("data directory path %q contains ',', ':' or '\\'", dir)
		return err, err
	}
	if err := mount(image); err != nil {
		return err, errors.New("overlayfs unavailable")
	}
	if usernsFD == nil {
		return nil, errors.New("no user namespace")
	}
	if err := idmapMount(image, d.lower, usernsFD, true); err != nil {
		return nil, err
	}
	// A fresh upper and work dir: overlayfs refuses reuse across layers.
	for _, p := range []string{d.upper, d.work} {
		_ = os.RemoveAll(p)
		_ = os.Mkdir(p, 0o755)
	}
	return nil, mount(d.lower)
}
