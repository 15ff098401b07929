package sandbox_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// rootlessEnv carries the helper's mode and paths to TestHelperRootless.
const rootlessEnv = "VAGENT_SANDBOX_TEST_ROOTLESS"

// TestHelperRootless runs as an ordinary user, started by TestRootless:
// it enters its user namespace (the test binary is re-executed in it, and
// the outer process exits with its status) and prints what the sandbox
// did, one line per check, for TestRootless to compare.
func TestHelperRootless(t *testing.T) {
	args := os.Getenv(rootlessEnv)
	if args == "" {
		t.Skip("helper process for TestRootless")
	}
	f := strings.Split(args, "\n")
	mode, data, rootfs := f[0], f[1], f[2]
	if err := sandbox.EnterUserNamespace(); err != nil {
		fmt.Printf("ENTER %v\n", err)
		if mode != "check" {
			return
		}
	}
	switch mode {
	case "check":
		reqs, err := sandbox.CheckHost(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			fmt.Printf("CHECK %v %s: %s\n", r.OK, r.Name, r.Detail)
		}
		return
	}
	uid, ok := sandbox.RootlessUser()
	fmt.Printf("AGENT pid %d rootless %v uid %d shift %d\n", os.Getpid(), ok, uid, sandbox.LowerShift())
	m, err := sandbox.New(data, sandbox.WithSeccomp(sandbox.SeccompSupported))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	u, g, n := m.IDRange()
	fmt.Printf("IDRANGE %d %d %d\n", u, g, n)
	run := func(name string, spec sandbox.Spec) *sandbox.Result {
		var out sandboxtest.Buffer
		spec.Lower, spec.Env = rootfs, pathEnv
		if spec.Output == nil {
			spec.Output = &out
		}
		res, err := m.Run(context.Background(), spec)
		if err != nil {
			fmt.Printf("%s error: %v\n", name, err)
			return nil
		}
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			fmt.Printf("%s %s\n", name, line)
		}
		fmt.Printf("%s exit %d\n", name, res.ExitCode)
		return res
	}
	switch mode {
	case "crash":
		// A build that is killed with the agent: its processes must die
		// with it, and the next agent must find nothing of it.
		run("CRASH", sandbox.Spec{Args: []string{"sh", "-c", "echo started; sleep 1000 & sleep 1000"}, Output: os.Stdout})
		return
	case "recover":
		entries, _ := os.ReadDir(filepath.Join(data, "runs"))
		kept, _ := os.ReadDir(filepath.Join(data, "kept"))
		fmt.Printf("RECOVER runs %d kept %d\n", len(entries), len(kept))
		return
	}
	// An overlay root filesystem, as builds have: container root and the
	// builder user write files, a setuid one among them; the upper is
	// kept for TestRootless to look at from the host.
	res := run("ROOT", sandbox.Spec{KeepUpper: true, Args: []string{"sh", "-c",
		`id -u; awk '{print $1, $2, $3}' /proc/self/uid_map; echo x >/file; mkdir /d; cp /bin/busybox /d/suid; chmod 4755 /d/suid; ` +
			`touch /d/b; chown 1000:1000 /d/b; mount -t tmpfs t /mnt 2>/dev/null || echo no-mount; ls -ln /bin/busybox | tr -s ' ' | cut -d' ' -f3,4; ` +
			// The isolated network is the agent's: container root cannot
			// change it, and pasta's interface is there.
			`ip link add d0 type dummy 2>/dev/null || echo no-netadmin; ip -o link | grep -c -v ' lo:'`}})
	if res != nil && res.Upper != nil {
		fmt.Printf("UPPER %s %d %v\n", res.Upper.Path, res.Upper.UIDBase, res.Upper.UserXattr)
	}
	run("BUILDER", sandbox.Spec{UID: 1000, GID: 1000, Args: []string{"sh", "-c", "id -u; touch /etc/x 2>/dev/null || echo denied; touch /tmp/y && echo tmp"}})
	run("RO", sandbox.Spec{ReadOnly: true, Network: sandbox.NetworkNone, Args: []string{"sh", "-c", "touch /x 2>/dev/null || echo ro; cat /proc/net/dev | grep -c :"}})
	run("LIMIT", sandbox.Spec{Limits: &sandbox.Limits{Memory: 256 << 20, Pids: 64}, Args: []string{"sh", "-c", "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"}})
	// The disk limit needs no cgroup: a run writing twice its limit into
	// a writable mount is stopped.
	if res := run("DISK", sandbox.Spec{
		Limits: &sandbox.Limits{Disk: 64 << 20}, Mounts: []sandbox.Mount{{Source: f[3], Target: "/w"}},
		Args: []string{"sh", "-c", `i=0; while [ $i -lt 8 ]; do dd if=/dev/zero of=/w/f$i bs=1M count=16 2>/dev/null; i=$((i+1)); done; sleep 60`},
	}); res != nil {
		fmt.Printf("DISK exceeded %v\n", res.DiskExceeded)
	}
	// A directory the agent cannot read (host root's) is not measured as
	// empty.
	_, err = sandbox.DiskUsage(f[4])
	fmt.Printf("UNREADABLE %v\n", err != nil && strings.Contains(err.Error(), "cannot be measured"))
	// A lower that was not shifted is refused, naming why.
	own := filepath.Join(data, "..", "unshifted")
	_ = os.Mkdir(own, 0o755)
	_, err = m.Run(context.Background(), sandbox.Spec{Lower: own, Args: []string{"true"}})
	fmt.Printf("UNSHIFTED %v\n", err)
}

// TestRootless runs the sandbox as an ordinary user with a block of
// subordinate ids, in rootless mode: the test binary enters its user
// namespace, and builds run on overlays of a lower shifted by 1, as
// container root and as the builder user, in containers whose root is
// the user's first subordinate id. It checks, from the host: who owns
// what the run left (subordinate ids only: a setuid file too, never the
// user or host root), that no process of the runs had a host id outside
// the user's, that a limit without a delegated cgroup (this host) is
// refused by name while no limit runs, the disk limit, the refusal of an
// unshifted lower, CheckHost's verdict, and that a SIGKILLed agent takes
// its builds with it and leaves the next one nothing to clean up.
func TestRootless(t *testing.T) {
	u := testkit.NewRootlessUser(t)
	testkit.RequireRootlessNetwork(t)
	bin := u.Install(t, os.Args[0], "sandbox.test")
	work := filepath.Join(u.Home, "work")
	rootfs := filepath.Join(work, "rootfs")
	data := filepath.Join(u.Home, ".local/share/vagent/sandbox")
	writable, tree := filepath.Join(work, "writable"), filepath.Join(work, "tree")
	for _, d := range []string{work, data, writable, filepath.Join(tree, "hidden")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := osexec.Command("cp", "-a", sandboxtest.BusyboxRootfs(t), rootfs).Run(); err != nil {
		t.Fatal(err)
	}
	sandboxtest.ShiftTree(t, rootfs, u.SubBase) // as oci unpacks for LowerShift 1
	if err := os.WriteFile(filepath.Join(tree, "hidden", "big"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(tree, "hidden"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{work, filepath.Join(u.Home, ".local"), filepath.Join(u.Home, ".local/share"), filepath.Join(u.Home, ".local/share/vagent"), data} {
		if err := os.Chown(p, u.UID, u.GID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(writable, u.SubBase, u.SubBase); err != nil { // container root's, as a build's cache
		t.Fatal(err)
	}

	helper := func(mode string) (*osexec.Cmd, *sandboxtest.Buffer) {
		cmd := u.Command(bin, "-test.run=^TestHelperRootless$", "-test.v")
		cmd.Env = append(cmd.Env, rootlessEnv+"="+strings.Join([]string{mode, data, rootfs, writable, tree}, "\n"))
		var out sandboxtest.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = 10 * time.Second // a pipe held by a process that outlived the helper
		return cmd, &out
	}
	cmd, out := helper("runs")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watch := testkit.WatchProcs(cmd.Process.Pid)
	err := cmd.Wait()
	procs := watch.Stop()
	if err != nil {
		t.Fatalf("rootless helper: %v\n%s", err, out.String())
	}
	got := out.String()
	t.Logf("helper output:\n%s", got)
	if n := u.CheckProcs(t, procs); n < 8 {
		t.Errorf("saw %d processes of the helper: the watch missed the runs", n)
	}
	limit := "LIMIT 64\nLIMIT exit 0\n"
	if !cgroups.IsCgroup2UnifiedMode() || !delegated() {
		limit = `LIMIT error: limit cannot be applied on this host: memory (controller "memory"), pids (controller "pids") not available`
	}
	for _, want := range []string{
		"AGENT pid 1 rootless true uid " + strconv.Itoa(u.UID) + " shift 1\n",
		"IDRANGE 1 1 65536\n",
		"ROOT 0\nROOT 0 1 65536\n",
		"ROOT no-mount\nROOT 0 0\nROOT no-netadmin\nROOT 1\nROOT exit 0\n", // container root owns the image's files; cannot mount
		"BUILDER 1000\nBUILDER denied\nBUILDER tmp\nBUILDER exit 0\n",
		"RO ro\nRO 1\nRO exit 0\n",
		limit,
		"DISK exceeded true\n",
		"UNREADABLE true\n",
		"UNSHIFTED invalid sandbox spec: lower " + filepath.Join(data, "..", "unshifted") + " is owned by uid 0, not by container root (1)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("helper output lacks %q", want)
		}
	}
	// What the run left, seen from the host: subordinate ids only.
	var upper string
	for _, line := range strings.Split(got, "\n") {
		if p, ok := strings.CutPrefix(line, "UPPER "); ok {
			upper = strings.Fields(p)[0]
			if !strings.HasSuffix(p, " 1 true") {
				t.Errorf("kept upper %q: want UIDBase 1, UserXattr", p)
			}
		}
	}
	if upper == "" {
		t.Fatal("no kept upper")
	}
	owner := func(p string) (int, int, os.FileMode) {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return int(st.Uid), int(st.Gid), fi.Mode()
	}
	if uid, gid, mode := owner(filepath.Join(upper, "d/suid")); uid != u.SubBase || gid != u.SubBase || mode&os.ModeSetuid == 0 {
		t.Errorf("setuid file: %d:%d %v, want %d:%d setuid", uid, gid, mode, u.SubBase, u.SubBase)
	}
	if uid, _, _ := owner(filepath.Join(upper, "d/b")); uid != u.SubBase+1000 {
		t.Errorf("builder's file: uid %d, want %d", uid, u.SubBase+1000)
	}
	if _, sub := u.CheckOwners(t, data); sub == 0 {
		t.Errorf("nothing under %s is owned by a subordinate id", data)
	}
	// No other host user can reach the setuid file.
	if err := nobodyCan(upper + "/d/suid"); err == nil {
		t.Errorf("nobody reaches %s", upper)
	}

	// CheckHost, in the user namespace: nothing missing (no limit is
	// configured, so no delegated cgroup is needed).
	cmd, out = helper("check")
	if err := cmd.Run(); err != nil {
		t.Fatalf("check helper: %v\n%s", err, out.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "CHECK false") {
			t.Errorf("%s", line)
		}
	}
	for _, want := range []string{"CHECK true subordinate ids: uids " + strconv.Itoa(u.SubBase), "CHECK true overlayfs: mounted an overlay (userxattr)", "CHECK true newuidmap: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}

	// kill -9 of the agent mid-run: its build dies with it.
	cmd, out = helper("crash")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), "started") {
		if time.Now().After(deadline) {
			t.Fatalf("the run did not start:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(subordinateProcs(u)); n < 2 {
		t.Fatalf("%d processes of the build before the kill, want its sleeps", n)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	deadline = time.Now().Add(10 * time.Second)
	for len(u.Procs()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes of the user outlived the agent: %v", u.Procs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd, out = helper("recover")
	if err := cmd.Run(); err != nil {
		t.Fatalf("recover helper: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "RECOVER runs 0 kept 0\n") {
		t.Errorf("after the crash:\n%s", out.String())
	}
	if left, _ := filepath.Glob("/tmp/vagent-runs-*"); len(left) > 0 {
		for _, p := range left {
			if uid, _, _ := owner(p); uid == u.UID {
				t.Errorf("%s of a dead agent left behind", p)
			}
		}
	}
}

// subordinateProcs lists the host processes running with one of u's
// subordinate ids (builds), not the user's own.
func subordinateProcs(u *testkit.RootlessUser) []int {
	var out []int
	for _, pid := range u.Procs() {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
				if id, err := strconv.Atoi(strings.Fields(v)[0]); err == nil && id != u.UID {
					out = append(out, pid)
				}
			}
		}
	}
	return out
}

// nobodyCan stats p as uid 65534.
func nobodyCan(p string) error {
	cmd := osexec.Command("stat", p)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// delegated tells whether a test user's agent would get a delegated
// cgroup here: never from a test run as root outside a user session.
func delegated() bool { return false }

// TestRootlessWithoutSubIDs runs CheckHost and EnterUserNamespace as a
// user that has no subordinate ids (nobody): both name what is missing
// with the command that adds them.
func TestRootlessWithoutSubIDs(t *testing.T) {
	needRoot(t)
	dir := sandboxtest.Dir(t)
	bin := filepath.Join(dir, "sandbox.test")
	if out, err := osexec.Command("cp", os.Args[0], bin).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	cmd := osexec.Command(bin, "-test.run=^TestHelperRootless$", "-test.v")
	cmd.Env = []string{rootlessEnv + "=check\n" + filepath.Join(dir, "data") + "\n", "PATH=/usr/bin:/bin", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"ENTER rootless mode is not available\n  subordinate ids: user nobody has no entry in /etc/subuid and /etc/subgid: sudo usermod --add-subuids ",
		"CHECK false subordinate ids: user nobody has no entry in /etc/subuid and /etc/subgid: sudo usermod --add-subuids ",
		"CHECK false privileges: rootless: user nobody (uid 65534) could not enter a user namespace of its own",
		"CHECK false overlayfs: not tried: needs the user namespace",
		"CHECK true newuidmap: /usr/bin/newuidmap",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !errors.Is(&sandbox.RootlessError{}, sandbox.ErrRootless) {
		t.Error("RootlessError is not ErrRootless")
	}
}

// rootlessVMEnv is set by `make test-vm`'s rootless placement (contrib/vm)
// when it runs TestRootlessLimits as an ordinary user: "delegated" in a
// systemd user service with Delegate=yes, "undelegated" outside one.
const rootlessVMEnv = "VAGENT_VM_ROOTLESS"

// TestRootlessLimits runs as an ordinary user in `make test-vm`'s rootless
// placement (cgroup v2): the test binary enters its user namespace; in a
// systemd user service with Delegate=yes a run's memory, pids and cpu
// limits are what the run reads from its own cgroup files, and its cgroup
// is gone afterwards; without delegation the same limits are refused
// naming each one and the fix, and a run without limits works.
func TestRootlessLimits(t *testing.T) {
	mode := os.Getenv(rootlessVMEnv)
	if mode == "" {
		t.Skip("run by make test-vm as an ordinary user (" + rootlessVMEnv + "=delegated|undelegated)")
	}
	if err := sandbox.EnterUserNamespace(); err != nil {
		t.Fatal(err)
	}
	rootfs := sandboxtest.BusyboxRootfs(t)
	sandboxtest.ShiftTree(t, rootfs, 1)
	m, err := sandbox.New(filepath.Join(sandboxtest.Dir(t), "data"), sandbox.WithSeccomp(sandbox.SeccompSupported))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	limits := sandbox.Limits{Memory: 256 << 20, Pids: 64, CPUQuota: 0.5, CPUWeight: 50}
	read := `p=$(sed -n 's/^0:://p' /proc/self/cgroup); echo "cgroup=$p"; for f in memory.max pids.max cpu.max cpu.weight; do echo "$f=$(cat /sys/fs/cgroup$p/$f)"; done`
	var out sandboxtest.Buffer
	res, err := m.Run(t.Context(), sandbox.Spec{Lower: rootfs, Env: pathEnv, Output: &out, Limits: &limits, Args: []string{"sh", "-c", read}})
	switch mode {
	case "delegated":
		if err != nil {
			t.Fatalf("a run with limits in a delegated cgroup: %v", err)
		}
		t.Logf("inside the run:\n%s", out.String())
		for _, want := range []string{"memory.max=268435456\n", "pids.max=64\n", "cpu.max=50000 100000\n", "cpu.weight=50\n"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("the run's cgroup lacks %q (exit %d)", want, res.ExitCode)
			}
		}
		var cg string
		for _, line := range strings.Split(out.String(), "\n") {
			if p, ok := strings.CutPrefix(line, "cgroup="); ok {
				cg = p
			}
		}
		if cg == "" || cg == "/" {
			t.Fatalf("the run had no cgroup of its own: %q", cg)
		}
		if _, err := os.Stat("/sys/fs/cgroup" + cg); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the run's cgroup %s is left: %v", cg, err)
		}
	case "undelegated":
		if !errors.Is(err, sandbox.ErrLimitUnavailable) {
			t.Fatalf("limits without a delegated cgroup: %v, want ErrLimitUnavailable", err)
		}
		for _, want := range []string{`memory (controller "memory")`, `pids (controller "pids")`, `cpu weight (controller "cpu")`, `cpu quota (controller "cpu")`, "Delegate=yes"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the refusal lacks %q: %v", want, err)
			}
		}
		if m.Unlimited() == nil {
			t.Error("Unlimited says nothing without a delegated cgroup")
		}
		res, err := m.Run(t.Context(), sandbox.Spec{Lower: rootfs, Env: pathEnv, Args: []string{"true"}})
		if err != nil || res.ExitCode != 0 {
			t.Errorf("a run without limits: %v %+v", err, res)
		}
	default:
		t.Fatalf("%s=%q", rootlessVMEnv, mode)
	}
}
