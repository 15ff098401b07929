package sandbox

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Requirement is one host requirement reported by CheckHost.
type Requirement struct {
	// Name names the requirement ("kernel", "user namespaces"...).
	Name string
	// OK tells whether the host meets it.
	OK bool
	// Detail says what was found, or why the requirement is not met.
	Detail string
}

// hostFacts is what CheckHost probes; evaluate turns it into requirements.
type hostFacts struct {
	kernel         string // uname release
	root           bool
	uid            int
	userns         error // creating a user namespace with the id map
	overlay        error // mounting an overlay
	idmapped       error // an overlay over an idmapped lower
	cgroupVersion  int   // 1 (v1 or hybrid) or 2
	controllers    map[string]bool
	swapAccounting bool
	seccompBuilt   bool
	seccompKernel  bool
	idBase, idSize uint32
	idConflicts    []string // users or subuid entries in the mapped range
	dataDir        string
	probeDir       string // dataDir, or the existing directory above it
	dataDirErr     error  // why builds cannot write to the data dir
	freeBytes      uint64
	freeErr        error
	limits         string // what a probe build container saw of its limits
	limitsErr      error  // why a build with limits could not run
	network        string // what the isolated network probe made
	networkErr     error  // why an isolated network could not be made

	// Rootless mode (an ordinary user's agent): what the host allows the
	// user (nil: a root agent), whether this process runs in the user
	// namespace, the host ids of its containers, and, without a delegated
	// cgroup, why (the runs then get no cgroup and no limit).
	rootless     *rootlessFacts
	inUserNS     bool
	hostIDs      string // "408585216-408651751"
	undelegated  error
	limitsWanted bool // limits are configured (not only probed)
}

// minRootlessKernel is the oldest kernel that mounts overlayfs in a user
// namespace (with userxattr; idmapped mounts are not used rootless).
var minRootlessKernel = [2]int{5, 11}

// minFreeBytes is the free space the data directory needs for builds.
const minFreeBytes = 2 << 30

// minKernel is the oldest kernel with overlayfs over idmapped lower layers.
var minKernel = [2]int{5, 19}

// evaluate decides, from probed facts, which requirements hold.
func evaluate(f hostFacts) []Requirement {
	if f.rootless != nil {
		return evaluateRootlessHost(f)
	}
	var reqs []Requirement
	add := func(name string, ok bool, format string, args ...any) {
		reqs = append(reqs, Requirement{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}

	if v, ok := parseKernel(f.kernel); !ok {
		add("kernel", false, "cannot parse kernel release %q", f.kernel)
	} else if v[0] < minKernel[0] || v[0] == minKernel[0] && v[1] < minKernel[1] {
		add("kernel", false, "%s is older than %d.%d (overlayfs over idmapped lower layers)", f.kernel, minKernel[0], minKernel[1])
	} else {
		add("kernel", true, "%s", f.kernel)
	}

	add("privileges", true, "running as root")

	if f.userns != nil {
		add("user namespaces", false, "cannot create a user namespace: %v", f.userns)
	} else {
		add("user namespaces", true, "container ids 0-%d map to host ids %d-%d", f.idSize-1, f.idBase, uint64(f.idBase)+uint64(f.idSize)-1)
	}

	if f.root {
		if len(f.idConflicts) > 0 {
			add("id range", false, "host ids %d-%d are in use: %s", f.idBase, uint64(f.idBase)+uint64(f.idSize)-1, strings.Join(f.idConflicts, ", "))
		} else {
			add("id range", true, "host ids %d-%d used by no user and no /etc/subuid or /etc/subgid entry", f.idBase, uint64(f.idBase)+uint64(f.idSize)-1)
		}
	}

	switch {
	case f.dataDirErr != nil:
		add("data dir", false, "%v", f.dataDirErr)
	case f.probeDir != "" && f.probeDir != f.dataDir:
		add("data dir", true, "%s does not exist yet: vagent run creates it in %s (probed there)", f.dataDir, f.probeDir)
	default:
		add("data dir", true, "%s is writable", f.dataDir)
	}

	if f.root {
		switch {
		case errors.Is(f.overlay, errNotTried):
			add("overlayfs", false, "%v", errNotTried)
		case f.overlay != nil:
			add("overlayfs", false, "cannot mount overlayfs: %v", f.overlay)
		default:
			add("overlayfs", true, "mounted an overlay in %s", f.probe())
		}
		switch {
		case errors.Is(f.idmapped, errNotTried):
			add("idmapped lower", false, "%v", errNotTried)
		case f.idmapped != nil:
			add("idmapped lower", false, "cannot use an idmapped lower layer: %v (the data directory's filesystem must support idmapped mounts)", f.idmapped)
		default:
			add("idmapped lower", true, "overlay over an idmapped bind mount works")
		}
	}

	switch {
	case f.cgroupVersion == 0:
		add("cgroups", false, "no cgroup filesystem mounted at /sys/fs/cgroup")
	default:
		var missing []string
		for _, c := range []string{"memory", "pids", "cpu"} {
			if !f.controllers[c] {
				missing = append(missing, c)
			}
		}
		if f.cgroupVersion == 1 && !f.controllers["devices"] {
			missing = append(missing, "devices")
		}
		if len(missing) > 0 {
			add("cgroups", false, "cgroup v%d lacks controllers: %s", f.cgroupVersion, strings.Join(missing, ", "))
		} else {
			swap := "memory+swap limits"
			if !f.swapAccounting {
				swap = "no swap accounting: memory limits only"
			}
			add("cgroups", true, "cgroup v%d with memory, pids, cpu (%s)", f.cgroupVersion, swap)
		}
	}

	if f.limitsErr != nil {
		add("build limits", false, "%v", f.limitsErr)
	} else {
		add("build limits", true, "%s", f.limits)
	}
	return append(reqs, f.commonTail()...)
}

// commonTail are the requirements of both modes that come last: the
// isolated network, seccomp and disk space.
func (f hostFacts) commonTail() []Requirement {
	var reqs []Requirement
	add := func(name string, ok bool, format string, args ...any) {
		reqs = append(reqs, Requirement{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	if f.networkErr != nil {
		add("isolated network", false, "%v", f.networkErr)
	} else {
		add("isolated network", true, "%s", f.network)
	}

	switch {
	case !f.seccompKernel:
		add("seccomp", false, "the kernel has no seccomp filter support")
	case !f.seccompBuilt:
		add("seccomp", false, "this binary was built without seccomp (cgo and -tags seccomp)")
	default:
		add("seccomp", true, "filters supported by kernel and binary")
	}

	switch {
	case f.freeErr != nil:
		add("disk space", false, "%s: %v", f.probe(), f.freeErr)
	case f.freeBytes < minFreeBytes:
		add("disk space", false, "%s has %s free, need at least %s", f.probe(), humanBytes(f.freeBytes), humanBytes(minFreeBytes))
	default:
		add("disk space", true, "%s has %s free", f.probe(), humanBytes(f.freeBytes))
	}
	return reqs
}

// evaluateRootlessHost is evaluate for an ordinary user's agent: what
// rootless mode needs from the host (each missing piece with its fix),
// then what a build needs, probed inside the user namespace; outside it
// (the namespace could not be entered) those probes are not tried.
func evaluateRootlessHost(f hostFacts) []Requirement {
	var reqs []Requirement
	add := func(name string, ok bool, format string, args ...any) {
		reqs = append(reqs, Requirement{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	rf := *f.rootless
	who := rf.user
	if who == "" {
		who = fmt.Sprint(rf.uid)
	}
	if v, ok := parseKernel(f.kernel); !ok {
		add("kernel", false, "cannot parse kernel release %q", f.kernel)
	} else if v[0] < minRootlessKernel[0] || v[0] == minRootlessKernel[0] && v[1] < minRootlessKernel[1] {
		add("kernel", false, "%s is older than %d.%d (overlayfs in a user namespace): rootless builds need a newer kernel; "+
			"root's agent (sudo vagent) needs %d.%d", f.kernel, minRootlessKernel[0], minRootlessKernel[1], minKernel[0], minKernel[1])
	} else {
		add("kernel", true, "%s", f.kernel)
	}
	if f.inUserNS {
		add("privileges", true, "rootless: user %s (uid %d) as root of a user namespace of its own", who, rf.uid)
	} else {
		add("privileges", false, "rootless: user %s (uid %d) could not enter a user namespace of its own: see below", who, rf.uid)
	}
	reqs = append(reqs, evaluateRootless(rf)...)
	notTried := func(name string) {
		add(name, false, "not tried: needs the user namespace (see above)")
	}
	if f.inUserNS {
		if f.userns != nil {
			add("id range", false, "%v", f.userns)
		} else {
			add("id range", true, "container ids 0-%d map to namespace ids %d-%d, the host ids %s", f.idSize-1, f.idBase, uint64(f.idBase)+uint64(f.idSize)-1, f.hostIDs)
		}
	} else {
		notTried("id range")
	}

	switch {
	case f.dataDirErr != nil:
		add("data dir", false, "%v", f.dataDirErr)
	case f.probeDir != "" && f.probeDir != f.dataDir:
		add("data dir", true, "%s does not exist yet: vagent creates it in %s (probed there)", f.dataDir, f.probeDir)
	default:
		add("data dir", true, "%s is writable", f.dataDir)
	}

	switch {
	case !f.inUserNS:
		notTried("overlayfs")
	case errors.Is(f.overlay, errNotTried):
		add("overlayfs", false, "%v", errNotTried)
	case f.overlay != nil:
		add("overlayfs", false, "cannot mount overlayfs in a user namespace (Linux ≥ %d.%d with userxattr): %v", minRootlessKernel[0], minRootlessKernel[1], f.overlay)
	default:
		add("overlayfs", true, "mounted an overlay (userxattr) in %s", f.probe())
	}

	switch {
	case !f.inUserNS:
		notTried("cgroups")
	case f.undelegated != nil && f.limitsWanted:
		add("cgroups", false, "no delegated cgroup, so build_limits cannot be applied: %v", f.undelegated)
	case f.undelegated != nil:
		add("cgroups", true, "no delegated cgroup: builds run without memory, pids and cpu limits (%v)", f.undelegated)
	default:
		var have []string
		for _, c := range []string{"memory", "pids", "cpu"} {
			if f.controllers[c] {
				have = append(have, c)
			}
		}
		add("cgroups", true, "cgroup v%d, delegated to the agent: %s", f.cgroupVersion, strings.Join(have, ", "))
	}

	switch {
	case !f.inUserNS:
		notTried("build limits")
	case f.limitsErr != nil:
		add("build limits", false, "%v", f.limitsErr)
	default:
		add("build limits", true, "%s", f.limits)
	}
	return append(reqs, f.commonTail()...)
}

// probe is the directory the probes ran in.
func (f hostFacts) probe() string {
	if f.probeDir != "" {
		return f.probeDir
	}
	return f.dataDir
}

// parseKernel extracts major and minor from a release like "6.1.0-18-amd64".
func parseKernel(release string) ([2]int, bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return [2]int{}, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorStr := parts[1]
	if i := strings.IndexFunc(minorStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorStr = minorStr[:i]
	}
	minor, err2 := strconv.Atoi(minorStr)
	if err1 != nil || err2 != nil {
		return [2]int{}, false
	}
	return [2]int{major, minor}, true
}

func humanBytes(n uint64) string {
	const unit = 1 << 10
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
