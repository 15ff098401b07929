package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// Where build cgroups go.
//
// cgroup v1 (and hybrid hosts): below a parent directory at the root of every
// controller hierarchy, as before: /sys/fs/cgroup/<controller>/<parent>/<run>.
//
// cgroup v2: below the agent's own cgroup, so that whoever placed the agent
// (a systemd unit, a Kubernetes pod, a container runtime) still accounts
// for its builds. cgroup v2 allows controllers to be enabled for the
// children of a cgroup only when it has no processes of its own (the
// no-internal-process rule), so the agent first moves the processes of its
// cgroup into a leaf named agentLeaf and then enables the controllers it
// needs:
//
//	<own cgroup>/                   memory pids cpu enabled for children
//	<own cgroup>/vagent-agent/      the agent (and whatever shared its cgroup)
//	<own cgroup>/<parent>/<run>/    one cgroup per run
//
// The only exception is the real root of the hierarchy (the agent runs in
// the host's root cgroup), which is exempt from the rule: the parent is then
// created at the root. The root of a private cgroup namespace (docker run
// --privileged, podman) is not the real root and gets the leaf.
//
// Which limits a Manager can apply is decided once, in New, from the
// controllers enabled for the parent; a Spec asking for a limit whose
// controller is missing is refused with ErrLimitUnavailable.

// agentLeaf is the cgroup v2 leaf the agent moves its own process into.
const agentLeaf = "vagent-agent"

// unifiedMountpoint is where libcontainer expects the cgroup v2 hierarchy.
const unifiedMountpoint = "/sys/fs/cgroup"

// cgroupSetup is where a Manager's run cgroups go and what they can limit.
type cgroupSetup struct {
	v2 bool
	// parent is the parent of the runs' cgroups, relative to the root of
	// each hierarchy (v1) or of the cgroup2 mount (v2), e.g.
	// "/vagent-0a1b2c" or "/system.slice/vagent.service/vagent-0a1b2c".
	parent string
	// controllers are those enabled for the runs' cgroups.
	controllers map[string]bool
	// swap is true when memory+swap can be limited.
	swap bool
	// moved is the cgroup the agent's processes were moved into (v2), or "".
	moved string
	// enableErr says why an available controller could not be enabled.
	enableErr error
	// undelegated: a rootless agent without a delegated cgroup. Runs get
	// no cgroup of their own (libcontainer only names one and tolerates
	// failing to create it), and nothing can be limited.
	undelegated bool
}

// checkLimits refuses limits the setup cannot apply, naming the controller.
func (s *cgroupSetup) checkLimits(l Limits) error {
	var missing []string
	need := func(set bool, what, ctrl string) {
		if set && !s.controllers[ctrl] {
			missing = append(missing, fmt.Sprintf("%s (controller %q)", what, ctrl))
		}
	}
	need(l.Memory > 0, "memory", "memory")
	need(l.Pids > 0, "pids", "pids")
	need(l.CPUWeight > 0, "cpu weight", "cpu")
	need(l.CPUQuota > 0, "cpu quota", "cpu")
	if l.MemorySwap > 0 && s.controllers["memory"] && !s.swap {
		missing = append(missing, "memory+swap (no swap accounting)")
	}
	if len(missing) == 0 {
		return nil
	}
	err := fmt.Errorf("%w: %s not available in cgroup %s (available: %s)",
		ErrLimitUnavailable, strings.Join(missing, ", "), s.parent, s.describe())
	if s.enableErr != nil {
		err = fmt.Errorf("%w; %w", err, s.enableErr)
	}
	return err
}

// describe lists the usable controllers.
func (s *cgroupSetup) describe() string {
	var have []string
	for _, c := range []string{"memory", "pids", "cpu"} {
		if s.controllers[c] {
			have = append(have, c)
		}
	}
	if len(have) == 0 {
		return "none"
	}
	if s.swap {
		have = append(have, "memory+swap")
	}
	return strings.Join(have, ", ")
}

// setupCgroups prepares the parent of the runs' cgroups (name is its last
// element) and reports what it can limit.
func setupCgroups(name string) (*cgroupSetup, error) {
	if !cgroups.IsCgroup2UnifiedMode() {
		s := &cgroupSetup{parent: "/" + name, controllers: map[string]bool{}}
		roots, err := cgroupRoots()
		if err != nil {
			return nil, err
		}
		for _, r := range roots {
			for _, c := range strings.Split(filepath.Base(r), ",") {
				s.controllers[c] = true
			}
		}
		s.swap = fileExists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
		return s, nil
	}
	selfCgroup, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	mountinfo, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	own, err := ownCgroupV2(selfCgroup, mountinfo, unifiedMountpoint)
	if err != nil {
		return nil, err
	}
	return setupCgroupV2(unifiedMountpoint, own, name)
}

// readMountinfo reads the calling thread's mount table (see mountPoints).
func readMountinfo() ([]byte, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return os.ReadFile("/proc/thread-self/mountinfo")
}

// ownCgroupV2 returns the process's cgroup v2 path relative to the cgroup2
// filesystem mounted at mountpoint, from /proc/self/cgroup ("0::/path") and
// the mount table (whose root field tells which cgroup is mounted there).
func ownCgroupV2(selfCgroup, mountinfo []byte, mountpoint string) (string, error) {
	var own string
	found := false
	for _, line := range strings.Split(string(selfCgroup), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			own, found = p, true
		}
	}
	if !found || !path.IsAbs(own) {
		return "", fmt.Errorf("no cgroup v2 entry in /proc/self/cgroup")
	}
	// A path that starts with /.. lies outside our cgroup namespace's root:
	// the process was moved out of the namespace after entering it.
	if own == "/.." || strings.HasPrefix(own, "/../") {
		return "", fmt.Errorf("own cgroup %s lies outside this cgroup namespace", own)
	}
	root := ""
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, pf := strings.Fields(pre), strings.Fields(post)
		if len(fields) >= 5 && len(pf) >= 1 && pf[0] == "cgroup2" && unescapeMountinfo(fields[4]) == mountpoint {
			root = unescapeMountinfo(fields[3]) // the last mount on top wins
		}
	}
	if root == "" {
		return "", fmt.Errorf("no cgroup2 filesystem mounted at %s", mountpoint)
	}
	rel, err := filepath.Rel(root, own)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("own cgroup %s is not below the cgroup2 mount at %s (root %s)", own, mountpoint, root)
	}
	return path.Join("/", rel), nil
}

// planV2 decides, for a process in cgroup own (relative to the mount at
// mnt), which cgroup holds the runs' parent and whether the process must
// first move into a leaf. A process already in an agentLeaf (a second
// Manager, or a child of the agent) counts as in the leaf's parent.
func planV2(mnt, own string) (home string, leaf string) {
	if path.Base(own) == agentLeaf {
		return path.Dir(own), ""
	}
	if own == "/" && !fileExists(filepath.Join(mnt, "cgroup.type")) {
		// The real root cgroup: exempt from the no-internal-process rule.
		return "/", ""
	}
	return own, path.Join(own, agentLeaf)
}

// setupCgroupV2 moves the agent out of the way, enables the controllers
// limits need below its cgroup and creates the runs' parent cgroup.
func setupCgroupV2(mnt, own, name string) (*cgroupSetup, error) {
	home, leaf := planV2(mnt, own)
	s := &cgroupSetup{v2: true, parent: path.Join(home, name), controllers: map[string]bool{}}
	homeDir := filepath.Join(mnt, home)
	if t, err := os.ReadFile(filepath.Join(homeDir, "cgroup.type")); err == nil {
		if typ := strings.TrimSpace(string(t)); typ != "domain" {
			return nil, fmt.Errorf("cgroup %s is %q, not a domain cgroup: memory and cpu limits need one", home, typ)
		}
	}
	if leaf != "" {
		if err := moveProcs(homeDir, filepath.Join(mnt, leaf)); err != nil {
			return nil, fmt.Errorf("moving the agent into a leaf cgroup %s (cgroup v2's no-internal-process rule; "+
				"a systemd unit needs Delegate=yes): %w", leaf, err)
		}
		s.moved = leaf
	}
	avail, err := readControllers(filepath.Join(homeDir, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	parentDir := filepath.Join(mnt, s.parent)
	if err := os.Mkdir(parentDir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("creating cgroup %s: %w", s.parent, err)
	}
	// Enable each controller limits need for the agent's cgroup's children
	// and for the parent's (the runs' cgroups); one that cannot be enabled
	// is not available (checkLimits names it when a limit needs it).
	var errs []error
	enable := func(dir, c string) error {
		return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0)
	}
	for _, c := range []string{"memory", "pids", "cpu"} {
		if !avail[c] {
			continue
		}
		if err := enable(homeDir, c); err != nil {
			errs = append(errs, fmt.Errorf("enabling %s in %s: %w", c, home, err))
		} else if err := enable(parentDir, c); err != nil {
			errs = append(errs, fmt.Errorf("enabling %s in %s: %w", c, s.parent, err))
		} else {
			s.controllers[c] = true
		}
	}
	// memory.swap.max exists in every non-root cgroup with the memory
	// controller when the kernel accounts swap.
	s.swap = s.controllers["memory"] && fileExists(filepath.Join(parentDir, "memory.swap.max"))
	s.enableErr = errors.Join(errs...)
	return s, nil
}

// moveIntoAgentLeaf moves the calling process into the agentLeaf child of
// its cgroup v2 when the user may write that cgroup (a delegated one: a
// systemd user service with Delegate=yes, systemd-run --user --scope -p
// Delegate=yes). A rootless agent calls it before it starts the agent
// proper in new user and pid namespaces: from there, the process that
// started it is not visible (cgroup.procs shows it as 0) and so cannot be
// moved out of the cgroup whose controllers the runs need; started in the
// leaf, the agent finds its home cgroup empty (planV2). Elsewhere it does
// nothing: the agent then says why limits cannot be applied.
func moveIntoAgentLeaf() {
	if !cgroups.IsCgroup2UnifiedMode() {
		return
	}
	selfCgroup, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return
	}
	mountinfo, err := readMountinfo()
	if err != nil {
		return
	}
	own, err := ownCgroupV2(selfCgroup, mountinfo, unifiedMountpoint)
	if err != nil || own == "/" || path.Base(own) == agentLeaf {
		return
	}
	dir := filepath.Join(unifiedMountpoint, own)
	if unix.Access(filepath.Join(dir, "cgroup.procs"), unix.W_OK) != nil {
		return // not the user's to change
	}
	leaf := filepath.Join(dir, agentLeaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return
	}
	_ = os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
}

// moveProcs moves every process of cgroup dir into the child cgroup leaf
// (created if missing). Processes forked meanwhile land in dir: it repeats
// until dir is empty.
func moveProcs(dir, leaf string) error {
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	for range 10 {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			return err
		}
		pids := strings.Fields(string(data))
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			if _, err := strconv.Atoi(p); err != nil {
				continue
			}
			err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(p), 0)
			if err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("moving pid %s: %w", p, err)
			}
		}
	}
	return fmt.Errorf("processes keep appearing in %s", dir)
}

// readControllers reads a space-separated controller list.
func readControllers(file string) (map[string]bool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, c := range strings.Fields(string(data)) {
		m[c] = true
	}
	return m, nil
}
