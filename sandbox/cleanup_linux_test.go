package sandbox_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestManyRunsLeaveNothing runs 200 containers in a row, some succeeding,
// some failing, some not found, some timing out, some keeping and
// releasing their upper, and checks that nothing of them is left.
func TestManyRunsLeaveNothing(t *testing.T) {
	e := newManager(t, sandbox.WithDefaultLimits(sandbox.Limits{Memory: 256 << 20, Pids: 100}))
	rootfs := sandboxtest.BusyboxRootfs(t)
	mountsBefore := countMounts(t, e.dir, rootfs)
	start := time.Now()
	counts := map[string]int{}
	for i := range 200 {
		spec := sandbox.Spec{Lower: rootfs, Env: pathEnv}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		kind := "ok"
		switch {
		case i%10 == 3:
			kind = "timeout"
			ctx, cancel = context.WithTimeout(t.Context(), 150*time.Millisecond)
			spec.Args, spec.Grace = []string{"sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000"}, 20*time.Millisecond
			// Not the isolated network, whose setup can take longer than
			// the deadline on a loaded machine: the run would not start.
			spec.Network = sandbox.NetworkNone
		case i%10 == 5:
			kind = "notfound"
			spec.Args = []string{"/no/such/binary"}
		case i%10 == 7:
			kind = "keep"
			spec.Args, spec.KeepUpper = []string{"sh", "-c", "echo x > /f"}, true
		case i%2 == 0:
			kind = "fail"
			spec.Args = []string{"sh", "-c", "echo x > /etc/f; exit 3"}
		default:
			spec.Args = []string{"true"}
		}
		res, err := e.m.Run(ctx, spec)
		cancel()
		if err != nil {
			t.Fatalf("run %d (%s): %v", i, kind, err)
		}
		want := map[string]int{"ok": 0, "fail": 3, "notfound": 127, "timeout": 137, "keep": 0}[kind]
		if kind == "timeout" && res.ExitCode != 0 {
			want = res.ExitCode // killed by SIGKILL, or by SIGTERM before the trap was set
		}
		if res.ExitCode != want || res.TimedOut != (kind == "timeout") {
			t.Fatalf("run %d (%s): %+v", i, kind, res)
		}
		if res.Upper != nil {
			if err := res.Upper.Release(); err != nil {
				t.Fatal(err)
			}
		}
		counts[kind]++
	}
	t.Logf("200 runs %v in %v", counts, time.Since(start))
	e.m.WaitReaped() // the last runs' pasta, killed, may still be exiting
	if l := leftovers(e.dir, e.parent, false); len(l) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
	}
	if after := countMounts(t, e.dir, rootfs); after != mountsBefore {
		t.Errorf("%d mounts before, %d after", mountsBefore, after)
	}
	if p := findProcs("sleep 1000"); len(p) > 0 {
		t.Errorf("processes left: %v", p)
	}
}

// countMounts counts the mounts that mention one of dirs (as mount point,
// root or option): other tests and processes on the host may mount too.
func countMounts(t *testing.T, dirs ...string) int {
	data, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		for _, d := range dirs {
			if strings.Contains(line, d) {
				n++
				break
			}
		}
	}
	return n
}

// The crash-recovery helper: a child process (this test binary) that
// starts a container on a data directory and is then SIGKILLed.
const (
	helperEnv = "VAGENT_SANDBOX_TEST_AGENT"
)

// procTag makes the sleeps of a helper's container this test process's:
// other test processes on the host (other checkouts) run the same tests,
// and a process is found by its command line.
func procTag(n string) string { return n + strconv.Itoa(os.Getpid()) }

// helperAgent is the helper's configuration.
type helperAgent struct {
	dir, parent, rootfs string
	tag                 string // in the container's sleep commands: "sleep 1237.<tag>"
	idBase              uint32 // 0: the default range
}

func TestHelperAgent(t *testing.T) {
	args := os.Getenv(helperEnv)
	if args == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	f := strings.Split(args, "\n")
	opts := []sandbox.Option{sandbox.WithCgroupParent(f[1]), sandbox.WithSeccomp(sandbox.SeccompSupported)}
	if base, _ := strconv.ParseUint(f[4], 10, 32); base != 0 {
		opts = append(opts, sandbox.WithIDMap(uint32(base), 65536))
	}
	m, err := sandbox.New(f[0], opts...)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	_, err = m.Run(context.Background(), sandbox.Spec{
		Lower: f[2], Env: pathEnv, Output: os.Stdout, KeepUpper: true,
		Args: []string{"sh", "-c", "trap '' TERM; (sleep 1237." + f[3] + " &); echo started; sleep 1238." + f[3]},
		// The isolated network: a namespace, pasta, rules and a forward.
		Network: sandbox.NetworkIsolated, Forward: []string{"127.0.0.1:9"},
	})
	fmt.Println("error: run returned:", err)
	os.Exit(1)
}

// start starts the helper and waits until its container runs; kill
// SIGKILLs it, leaving the container behind.
func (h helperAgent) start(t *testing.T) (kill func()) {
	t.Helper()
	cmd := osexec.Command(os.Args[0], "-test.run=^TestHelperAgent$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join([]string{h.dir, h.parent, h.rootfs, h.tag, strconv.FormatUint(uint64(h.idBase), 10)}, "\n"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill = func() {
		if !killed {
			killed = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(func() {
		kill()
		// Whatever the test did, nothing of the helper may outlive it: a
		// Manager's start recovers what it left.
		if m, err := sandbox.New(h.dir, sandbox.WithSeccomp(false), sandbox.WithCgroupParent(h.parent)); err == nil {
			m.Close()
		}
		for _, p := range append(findProcs("sleep 1237."+h.tag), findProcs("sleep 1238."+h.tag)...) {
			t.Errorf("helper process left: %s", p)
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "error:") {
			t.Fatal(sc.Text())
		}
		if sc.Text() == "started" {
			// "started" comes from the container's shell, which may print
			// it before its backgrounded sleeps have been exec'd: wait for
			// them.
			for deadline := time.Now().Add(30 * time.Second); len(findProcs("sleep 1237."+h.tag)) == 0 || len(findProcs("sleep 1238."+h.tag)) == 0; {
				if time.Now().After(deadline) {
					t.Fatal("the container's processes never appeared")
				}
				time.Sleep(10 * time.Millisecond)
			}
			return kill
		}
	}
	t.Fatal("helper agent did not start its container")
	return nil
}

// TestCrashRecovery SIGKILLs an agent with a running container and checks
// that the container survived it and that the next New cleans it up: its
// processes, cgroups, mounts and directories, and its isolated network (the
// namespace held by no process and mounted nowhere, no pasta process).
func TestCrashRecovery(t *testing.T) {
	needRoot(t)
	dir := sandboxtest.Dir(t)
	parent := fmt.Sprintf("vagent-test-%d-crash", os.Getpid())
	rootfs := sandboxtest.BusyboxRootfs(t)
	kill := helperAgent{dir: dir, parent: parent, rootfs: rootfs, tag: procTag("5")}.start(t)
	nsFiles, _ := filepath.Glob(filepath.Join(dir, "m", "*", "netns", "*"))
	if len(nsFiles) != 1 || len(testkit.PastaProcs(dir)) != 1 {
		t.Fatalf("the run has network namespaces %v and pasta %v, want one each", nsFiles, testkit.PastaProcs(dir))
	}
	var nsStat syscall.Stat_t
	if err := syscall.Stat(nsFiles[0], &nsStat); err != nil {
		t.Fatal(err)
	}
	if len(testkit.NetnsHolders(nsStat.Ino)) == 0 {
		t.Fatal("no process is in the run's network namespace: is the inode right?")
	}
	kill()
	// The parent-death signal does not reach a container's init: its
	// processes outlive the agent (NOTES-sandbox), which the recovery
	// below is for.
	if len(findProcs("sleep 1237."+procTag("5"))) == 0 || len(findProcs("sleep 1238."+procTag("5"))) == 0 {
		t.Fatal("container processes died with the agent: nothing to recover")
	}
	if l := leftovers(dir, parent, false); len(l) < 3 {
		t.Fatalf("expected state, mounts and cgroups of the killed agent, found %v", l)
	}
	// pasta died with the agent (its parent-death signal).
	if p := testkit.PastaProcs(dir); len(p) > 0 {
		t.Errorf("pasta outlived the agent: %v", p)
	}
	e := &testEnv{dir: dir, parent: parent}
	log := logrus.New()
	log.SetOutput(t.Output())
	m, err := sandbox.New(dir, sandbox.WithCgroupParent(parent), sandbox.WithSeccomp(sandbox.SeccompSupported), sandbox.WithLogger(log))
	if err != nil {
		t.Fatalf("New after crash: %v", err)
	}
	if p := append(findProcs("sleep 1237."+procTag("5")), findProcs("sleep 1238."+procTag("5"))...); len(p) > 0 {
		t.Errorf("processes survived recovery: %v", p)
	}
	if l := leftovers(e.dir, e.parent, false); len(l) > 0 {
		t.Errorf("left after recovery:\n%s", strings.Join(l, "\n"))
	}
	if h := testkit.NetnsHolders(nsStat.Ino); len(h) > 0 {
		var who []string
		for _, f := range h {
			pid := strings.Split(strings.TrimPrefix(f, "/proc/"), "/")[0]
			cmd, _ := os.ReadFile("/proc/" + pid + "/cmdline")
			who = append(who, pid+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
		}
		t.Errorf("processes still in the run's network namespace: %v %v (test pid %d)", h, who, os.Getpid())
	}
	if mountsOfNetns(t, nsStat.Ino) > 0 {
		t.Errorf("the run's network namespace is still mounted")
	}
	// The recovered Manager works.
	res, out := sh(t, m, rootfs, "echo again")
	if res.ExitCode != 0 || out != "again\n" {
		t.Errorf("run after recovery: %+v %q", res, out)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if l := leftovers(dir, parent, true); len(l) > 0 {
		t.Errorf("left after Close: %v", l)
	}
	if _, err := os.Stat(filepath.Join(dir, "lock")); err != nil {
		t.Error(err)
	}
}

// TestSharedDataDir: Managers share a data directory (an agent and `vagent
// build` beside it). A Manager starting recovers what a killed one left —
// its container killed, its cgroups, mounts and directories removed —
// while a live one's container keeps running through it.
func TestSharedDataDir(t *testing.T) {
	live := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	// The live Manager's container runs until the test ends it.
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	w := &readyWriter{want: "up", ready: make(chan struct{})}
	liveDone := make(chan *sandbox.Result, 1)
	go func() {
		res, err := live.m.Run(ctx, sandbox.Spec{Lower: rootfs, Env: pathEnv, Output: w,
			Args: []string{"sh", "-c", "echo up; exec sleep 1239." + procTag("6")}})
		if err != nil {
			t.Error(err)
		}
		liveDone <- res
	}()
	select {
	case <-w.ready:
	case res := <-liveDone:
		t.Fatalf("live container ended: %+v %q", res, w.String())
	}

	deadParent := fmt.Sprintf("vagent-test-%d-dead", os.Getpid())
	kill := helperAgent{dir: live.dir, parent: deadParent, rootfs: rootfs, tag: procTag("6")}.start(t)
	kill()
	if len(findProcs("sleep 1238."+procTag("6"))) == 0 {
		t.Fatal("the killed agent's container died with it: nothing to recover")
	}
	deadLeft := leftovers(live.dir, deadParent, false)

	third := newManagerIn(t, live.dir)
	if p := append(findProcs("sleep 1237."+procTag("6")), findProcs("sleep 1238."+procTag("6"))...); len(p) > 0 {
		t.Errorf("the killed agent's processes survived recovery: %v", p)
	}
	for _, p := range cgroupParentDirs(deadParent) {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("the killed agent's cgroup %s is left", p)
		}
	}
	if l := leftovers(live.dir, deadParent, false); len(l) >= len(deadLeft) {
		t.Errorf("before recovery %v, after %v", deadLeft, l)
	}
	if len(findProcs("sleep 1239."+procTag("6"))) == 0 {
		t.Error("the live Manager's container was killed by another Manager's start")
	}
	// Both run containers at once.
	res, out := sh(t, third.m, rootfs, "echo beside")
	if res.ExitCode != 0 || out != "beside\n" {
		t.Errorf("second Manager's run: %+v %q", res, out)
	}
	stop()
	if res := <-liveDone; res == nil || !res.Cancelled {
		t.Errorf("live run: %+v, want cancelled by the test", res)
	}
}

// TestOlderVagentLocked: an older vagent held its sandbox directory alone
// (an exclusive lock); a Manager does not run beside it.
func TestOlderVagentLocked(t *testing.T) {
	needRoot(t)
	dir := sandboxtest.Dir(t)
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.New(dir, sandbox.WithSeccomp(false)); !errorsIs(err, sandbox.ErrLocked) {
		t.Errorf("New beside an older vagent: %v, want ErrLocked", err)
	}
}

// TestIDRangeInUse: Managers of one data directory in different processes
// must map the same ids (the package cache belongs to one range).
func TestIDRangeInUse(t *testing.T) {
	needRoot(t)
	dir := sandboxtest.Dir(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	helperAgent{dir: dir, parent: fmt.Sprintf("vagent-test-%d-range", os.Getpid()), rootfs: rootfs, tag: procTag("7"), idBase: 300000}.start(t)
	before, _ := filepath.Glob(filepath.Join(dir, "m", "*"))
	parent := fmt.Sprintf("vagent-test-%d-range2", os.Getpid())
	_, err := sandbox.New(dir, sandbox.WithSeccomp(false), sandbox.WithCgroupParent(parent))
	if !errorsIs(err, sandbox.ErrIDRangeInUse) || !strings.Contains(err.Error(), "pid ") || !strings.Contains(err.Error(), "300000-365535") {
		t.Errorf("New with the default range beside a Manager on 300000: %v, want ErrIDRangeInUse naming its pid and range", err)
	}
	if after, _ := filepath.Glob(filepath.Join(dir, "m", "*")); len(after) != len(before) {
		t.Errorf("instances before the refused New %v, after %v", before, after)
	}
	for _, p := range cgroupParentDirs(parent) {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("the refused Manager left its cgroup %s", p)
		}
	}
}

// TestConcurrentJoins: Managers starting and stopping at once on one data
// directory (an agent restarting while `vagent build`s come and go) never
// take one another for an older vagent, and each one's runs work.
func TestConcurrentJoins(t *testing.T) {
	needRoot(t)
	dir := sandboxtest.Dir(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			var err error
			defer func() { errs <- err }()
			for i := range 3 {
				var m *sandbox.Manager
				m, err = sandbox.New(dir, sandbox.WithSeccomp(sandbox.SeccompSupported), sandbox.WithCgroupParent(fmt.Sprintf("vagent-test-%d-join-%d-%d", os.Getpid(), w, i)))
				if err != nil {
					return
				}
				var res *sandbox.Result
				res, err = m.Run(t.Context(), sandbox.Spec{Lower: rootfs, Env: pathEnv, Args: []string{"true"}})
				if err == nil && res.ExitCode != 0 {
					err = fmt.Errorf("run: %+v", res)
				}
				if cerr := m.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return
				}
			}
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if l := leftovers(dir, "vagent-none", true); len(l) > 0 {
		t.Errorf("left: %v", l)
	}
}
