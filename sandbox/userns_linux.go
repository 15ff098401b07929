package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The two steps of entering the user namespace, told to the re-executed
// binary by its environment (they never reach a container: libcontainer
// starts container inits with an environment of its own).
const (
	// usernsSyncEnv: this process was started in new namespaces and must
	// wait, on the descriptor the variable names, until its parent has
	// written its id maps; then it executes itself again (see
	// waitForIDMaps).
	usernsSyncEnv = "_VAGENT_USERNS_SYNC"
	// usernsSetupEnv: this process is the agent, root of its namespaces:
	// EnterUserNamespace finishes setting them up.
	usernsSetupEnv = "_VAGENT_USERNS_SETUP"
)

// EnterUserNamespace runs the rest of this program as root of a user
// namespace of its own when an ordinary user started it (rootless mode).
// Call it first thing in main, before any other work; it returns nil at
// once for root.
//
// For an ordinary user it starts this binary again, with the same
// arguments, environment and standard streams, in new user, mount and pid
// namespaces, and waits for it: newuidmap and newgidmap map namespace id 0
// to the user and ids 1..N to the user's blocks of /etc/subuid and
// /etc/subgid, while the new process waits, before anything else, in this
// package's init function; once mapped it executes itself once more (an
// execve as namespace root gives it every capability in its namespace)
// and continues as the agent. The calling process forwards the signals it
// gets (the agent is in a process group of its own, so a terminal's
// Ctrl-C reaches it once, through here) and exits as the agent did; it
// never returns then. When the agent dies, even by SIGKILL, everything it
// started dies with it: it is the init process of its pid namespace, and
// the caller kills it when the caller itself dies.
//
// It returns a *RootlessError when the host does not allow it: no
// subordinate ids, no newuidmap, user namespaces disabled. In the
// re-executed agent it finishes the namespace's setup (the mount tree made
// a slave of the host's, a /proc of its own pid namespace) and returns
// nil.
func EnterUserNamespace() error {
	if os.Getenv(usernsSetupEnv) != "" {
		return setupUserNamespace()
	}
	if os.Geteuid() == 0 {
		return nil
	}
	f := probeRootless(SystemHostFiles, uint32(os.Getuid()), uint32(os.Getgid()))
	var missing []Requirement
	for _, r := range evaluateRootless(f) {
		if !r.OK {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		return &RootlessError{Missing: missing}
	}
	return reexecInUserNamespace(f)
}

var setupOnce = sync.OnceValue(func() error {
	if os.Getpid() != 1 {
		return fmt.Errorf("%s is set in a process that is not its namespace's init", usernsSetupEnv)
	}
	os.Unsetenv(usernsSetupEnv)
	// Mounts made here (overlays, the /tmp mount of the runs) never
	// propagate to the host; the host's still show here.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("making / a slave mount: %w", err)
	}
	// A /proc of this pid namespace: pids the agent sees (its children,
	// containers' inits) are looked up there.
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	// The agent runs in a process group of its own: writing to a terminal
	// with tostop set must not stop it (a stop signal would be ignored,
	// the write retried forever).
	signal.Ignore(syscall.SIGTTOU)
	return nil
})

func setupUserNamespace() error { return setupOnce() }

// reexecInUserNamespace starts this binary in new namespaces, maps its ids
// and waits for it; it returns only when that fails.
func reexecInUserNamespace(f rootlessFacts) error {
	exe, err := os.Executable()
	if err != nil {
		return &RootlessError{Err: err}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return &RootlessError{Err: err}
	}
	defer w.Close()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{r} // descriptor 3
	cmd.Env = append(withoutEnv(os.Environ(), usernsSyncEnv, usernsSetupEnv), usernsSyncEnv+"=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		Setpgid:    true,
		// The main goroutine is locked to the main thread (this package's
		// init), which forks here: the signal comes when the process dies.
		Pdeathsig: syscall.SIGKILL,
	}
	// In a delegated cgroup, this process and the agent leave its cgroup
	// to the runs' controllers (moveIntoAgentLeaf).
	moveIntoAgentLeaf()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)
	// The agent's parent-death signal comes when the thread that starts
	// it ends: this one, kept until the process exits.
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		r.Close()
		signal.Stop(sigs)
		f.userns = err
		missing := []Requirement{}
		for _, req := range evaluateRootless(f) {
			if !req.OK {
				missing = append(missing, req)
			}
		}
		return &RootlessError{Missing: missing, Err: err}
	}
	r.Close()
	if err := writeIDMaps(cmd.Process.Pid, f); err != nil {
		w.Close() // the child exits without a word
		_ = cmd.Wait()
		signal.Stop(sigs)
		return &RootlessError{Err: err}
	}
	if _, err := w.Write([]byte{1}); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		signal.Stop(sigs)
		return &RootlessError{Err: fmt.Errorf("starting the agent in its user namespace: %w", err)}
	}
	// w stays open while this process lives: the agent, which gains
	// capabilities by executing itself and so loses its parent-death
	// signal, sets it again and then finds out from the pipe whether
	// this process died meanwhile (see rearmParentDeath).
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	signal.Stop(sigs)
	exitLike(cmd.ProcessState, err)
	return nil // not reached
}

// forwardedSignals go from the calling process to the agent.
var forwardedSignals = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
}

// exitLike ends this process the way the agent ended: with its exit
// status, or killed by the signal that killed it.
func exitLike(ps *os.ProcessState, err error) {
	if ps == nil {
		fmt.Fprintf(os.Stderr, "vagent: %v\n", err)
		os.Exit(1)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		sig := ws.Signal()
		signal.Reset(sig)
		_ = syscall.Kill(os.Getpid(), sig)
		time.Sleep(100 * time.Millisecond)
		os.Exit(128 + int(sig))
	}
	os.Exit(ps.ExitCode())
}

// writeIDMaps runs newuidmap and newgidmap on pid: namespace id 0 is the
// user, ids 1.. are the user's subordinate blocks, one after the other.
func writeIDMaps(pid int, f rootlessFacts) error {
	args := func(own uint32, blocks SubIDs) []string {
		a := []string{strconv.Itoa(pid), "0", strconv.FormatUint(uint64(own), 10), "1"}
		next := uint64(1)
		for _, b := range blocks {
			a = append(a, strconv.FormatUint(next, 10), strconv.FormatUint(uint64(b.Base), 10), strconv.FormatUint(uint64(b.Size), 10))
			next += uint64(b.Size)
		}
		return a
	}
	for _, m := range []struct {
		tool string
		args []string
	}{
		{f.newuidmap, args(f.uid, f.subuid)},
		{f.newgidmap, args(f.gid, f.subgid)},
	} {
		out, err := exec.Command(m.tool, m.args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %v: %s", filepath.Base(m.tool), strings.Join(m.args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// rearmParentDeath is the agent's first step in its namespace, from this
// package's init function on the main thread: executing itself with new
// capabilities cleared its parent-death signal, so it sets it again (a
// process attribute of the main thread, which lives as long as the
// process) and exits if the parent died before that: the parent's end of
// the pipe is then closed.
func rearmParentDeath() {
	fd, err := strconv.Atoi(os.Getenv(usernsSetupEnv))
	if err != nil || fd < 3 {
		return
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "vagent: setting the parent-death signal: %v\n", err)
		os.Exit(1)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 0); err == nil && n > 0 && pfd[0].Revents&unix.POLLHUP != 0 {
		os.Exit(1) // the parent is gone
	}
	unix.Close(fd)
}

// waitForIDMaps is the first step of the re-executed binary, from this
// package's init function: it waits until the parent has written the id
// maps (or gave up: then it exits) and executes itself again as root of
// its namespace. It never returns.
func waitForIDMaps() {
	fd, err := strconv.Atoi(os.Getenv(usernsSyncEnv))
	if err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "vagent: bad %s\n", usernsSyncEnv)
		os.Exit(1)
	}
	var b [1]byte
	if n, _ := unix.Read(fd, b[:]); n != 1 {
		os.Exit(1) // the parent reports why
	}
	// The descriptor stays open across the exec: rearmParentDeath reads
	// the parent's end of it.
	env := append(withoutEnv(os.Environ(), usernsSyncEnv, usernsSetupEnv), usernsSetupEnv+"="+strconv.Itoa(fd))
	err = unix.Exec("/proc/self/exe", os.Args, env)
	fmt.Fprintf(os.Stderr, "vagent: executing itself in its user namespace: %v\n", err)
	os.Exit(1)
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, e := range env {
		keep := true
		for _, n := range names {
			if strings.HasPrefix(e, n+"=") {
				keep = false
			}
		}
		if keep {
			out = append(out, e)
		}
	}
	return out
}

// HostFiles names the host files and directories rootless mode reads
// (tests use fakes).
type HostFiles struct {
	Subuid, Subgid string
	// Sysctl is the directory of the sysctls (/proc/sys).
	Sysctl string
	// Path is searched for newuidmap and newgidmap; "" uses $PATH and then
	// /usr/bin and /usr/sbin.
	Path string
}

// SystemHostFiles are the host's own.
var SystemHostFiles = HostFiles{Subuid: "/etc/subuid", Subgid: "/etc/subgid", Sysctl: "/proc/sys"}

// probeRootless reads what rootless mode needs for the user uid (primary
// group gid).
func probeRootless(h HostFiles, uid, gid uint32) rootlessFacts {
	f := rootlessFacts{uid: uid, gid: gid}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		f.user = u.Username
	}
	var err1, err2 error
	f.subuid, err1 = ReadSubIDs(h.Subuid, f.user, f.uid)
	f.subgid, err2 = ReadSubIDs(h.Subgid, f.user, f.uid)
	f.subErr = errors.Join(err1, err2)
	f.free = freeSubIDs(RootlessIDs, h.Subuid, h.Subgid)
	f.newuidmap, f.newuidmapOK = findIDMapTool("newuidmap", h.Path)
	f.newgidmap, f.newgidmapOK = findIDMapTool("newgidmap", h.Path)
	f.unprivClone = readSysctl(h.Sysctl, "kernel/unprivileged_userns_clone")
	f.maxUserNS = readSysctl(h.Sysctl, "user/max_user_namespaces")
	f.apparmorRestrict = readSysctl(h.Sysctl, "kernel/apparmor_restrict_unprivileged_userns")
	f.binary, _ = os.Executable()
	return f
}

// findIDMapTool finds newuidmap or newgidmap and tells whether it can
// write maps: setuid root, or a file capability.
func findIDMapTool(name, path string) (string, bool) {
	var p string
	if path != "" {
		for _, dir := range filepath.SplitList(path) {
			if q := filepath.Join(dir, name); isRegular(q) {
				p = q
				break
			}
		}
	} else if q, err := exec.LookPath(name); err == nil {
		p = q
	} else {
		for _, dir := range []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin"} {
			if q := filepath.Join(dir, name); isRegular(q) {
				p = q
				break
			}
		}
	}
	if p == "" {
		return "", false
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return p, false
	}
	// In a user namespace host root shows as the overflow id.
	if st.Mode&unix.S_ISUID != 0 && (st.Uid == 0 || InUserNamespace() && readSysctl("/proc/sys", "kernel/overflowuid") == strconv.FormatUint(uint64(st.Uid), 10)) {
		return p, true
	}
	_, err := unix.Getxattr(p, "security.capability", nil)
	return p, err == nil
}

func readSysctl(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// idMap is one line of /proc/PID/uid_map or gid_map.
type idMap struct{ inside, outside, count uint64 }

// readIDMap reads a uid_map or gid_map.
func readIDMap(file string) ([]idMap, error) {
	fh, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []idMap
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		in, err1 := strconv.ParseUint(f[0], 10, 32)
		outside, err2 := strconv.ParseUint(f[1], 10, 32)
		n, err3 := strconv.ParseUint(f[2], 10, 33)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("%s: bad line %q", file, sc.Text())
		}
		out = append(out, idMap{in, outside, n})
	}
	return out, sc.Err()
}

// initialUserNS tells whether maps is the initial user namespace's
// identity map.
func initialUserNS(maps []idMap) bool {
	return len(maps) == 1 && maps[0] == idMap{0, 0, 1<<32 - 1}
}

// mapped tells whether every id of [first, first+n) is mapped.
func mapped(maps []idMap, first, n uint64) bool {
	for n > 0 {
		found := false
		for _, m := range maps {
			if first >= m.inside && first < m.inside+m.count {
				k := min(n, m.inside+m.count-first)
				first, n = first+k, n-k
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// outside returns the host (parent namespace) id of id, or false.
func outside(maps []idMap, id uint64) (uint64, bool) {
	for _, m := range maps {
		if id >= m.inside && id < m.inside+m.count {
			return m.outside + id - m.inside, true
		}
	}
	return 0, false
}

// nsInfo is what rootless mode needs to know of the process's own user
// namespace.
type nsInfo struct {
	uidMap, gidMap []idMap
}

var selfNS = sync.OnceValues(func() (nsInfo, error) {
	u, err := readIDMap("/proc/self/uid_map")
	if err != nil {
		return nsInfo{}, err
	}
	g, err := readIDMap("/proc/self/gid_map")
	if err != nil {
		return nsInfo{}, err
	}
	return nsInfo{uidMap: u, gidMap: g}, nil
})

// InUserNamespace tells whether this process runs as root of a user
// namespace other than the host's: rootless mode, or a container whose
// root is not host root. Such a process cannot make idmapped mounts of
// the host's file systems; a Manager then runs builds on lowers shifted
// by its id range (LowerShift).
func InUserNamespace() bool {
	ns, err := selfNS()
	return err == nil && !initialUserNS(ns.uidMap)
}

// RootlessUser returns the host user this process acts for when it runs
// in rootless mode: as root of a user namespace whose id 0 is that
// ordinary user. ok is false for root and for processes in the host's
// user namespace.
func RootlessUser() (uid uint32, ok bool) {
	ns, err := selfNS()
	if err != nil || initialUserNS(ns.uidMap) || os.Geteuid() != 0 {
		return 0, false
	}
	host, found := outside(ns.uidMap, 0)
	if !found || host == 0 {
		return 0, false
	}
	return uint32(host), true
}

// rootlessIDRange is the id range of a Manager in a user namespace: the
// RootlessIDs ids after namespace root (1-65536), which must be mapped.
func rootlessIDRange() (IDRange, error) {
	ns, err := selfNS()
	if err != nil {
		return IDRange{}, err
	}
	r := IDRange{Base: 1, Size: RootlessIDs}
	if !mapped(ns.uidMap, uint64(r.Base), uint64(r.Size)) || !mapped(ns.gidMap, uint64(r.Base), uint64(r.Size)) {
		return IDRange{}, fmt.Errorf("%w: this user namespace does not map ids %s (uid_map %s): rootless builds need %d subordinate ids",
			ErrRootless, r, describeMap(ns.uidMap), RootlessIDs)
	}
	return r, nil
}

func describeMap(maps []idMap) string {
	parts := make([]string, len(maps))
	for i, m := range maps {
		parts[i] = fmt.Sprintf("%d→%d×%d", m.inside, m.outside, m.count)
	}
	return strings.Join(parts, ", ")
}

// checkMapped verifies that r is mapped in this user namespace.
func checkMapped(r IDRange) error {
	ns, err := selfNS()
	if err != nil {
		return err
	}
	if !mapped(ns.uidMap, uint64(r.Base), uint64(r.Size)) || !mapped(ns.gidMap, uint64(r.Base), uint64(r.Size)) {
		return fmt.Errorf("id range %s is not mapped in this user namespace (uid_map %s)", r, describeMap(ns.uidMap))
	}
	return nil
}
