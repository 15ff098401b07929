package sandbox_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
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
// starts a container and is then SIGKILLed by TestCrashRecovery.
const (
	helperEnv = "VAGENT_SANDBOX_TEST_AGENT"
)

func TestHelperAgent(t *testing.T) {
	args := os.Getenv(helperEnv)
	if args == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	f := strings.Split(args, "\n")
	m, err := sandbox.New(f[0], sandbox.WithCgroupParent(f[1]), sandbox.WithSeccomp(sandbox.SeccompSupported))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	_, err = m.Run(context.Background(), sandbox.Spec{
		Lower: f[2], Env: pathEnv, Output: os.Stdout, KeepUpper: true,
		Args: []string{"sh", "-c", "trap '' TERM; (sleep 1237.5 &); echo started; sleep 1238.5"},
		// The isolated network: a namespace, pasta, rules and a forward.
		Network: sandbox.NetworkIsolated, Forward: []string{"127.0.0.1:9"},
	})
	fmt.Println("error: run returned:", err)
	os.Exit(1)
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
	cmd := osexec.Command(os.Args[0], "-test.run=^TestHelperAgent$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir+"\n"+parent+"\n"+rootfs)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	started := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "error:") {
			t.Fatal(sc.Text())
		}
		if sc.Text() == "started" {
			started = true
			break
		}
	}
	if !started {
		t.Fatal("helper agent did not start its container")
	}
	// "started" comes from the container's shell, which may print it
	// before its backgrounded sleeps have been exec'd: wait for them.
	for deadline := time.Now().Add(30 * time.Second); len(findProcs("sleep 1237.5")) == 0 || len(findProcs("sleep 1238.5")) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the container's processes never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	nsFiles, _ := filepath.Glob(filepath.Join(dir, "netns", "*"))
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
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The parent-death signal does not reach a container's init: its
	// processes outlive the agent (NOTES-sandbox), which the recovery
	// below is for.
	if len(findProcs("sleep 1237.5")) == 0 || len(findProcs("sleep 1238.5")) == 0 {
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
	if p := append(findProcs("sleep 1237.5"), findProcs("sleep 1238.5")...); len(p) > 0 {
		t.Errorf("processes survived recovery: %v", p)
	}
	if l := leftovers(e.dir, e.parent, false); len(l) > 0 {
		t.Errorf("left after recovery:\n%s", strings.Join(l, "\n"))
	}
	if h := testkit.NetnsHolders(nsStat.Ino); len(h) > 0 {
		t.Errorf("processes still in the run's network namespace: %v", h)
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

func TestDataDirLocked(t *testing.T) {
	e := newManager(t)
	if _, err := sandbox.New(e.dir, sandbox.WithSeccomp(false)); !errorsIs(err, sandbox.ErrLocked) {
		t.Errorf("second New on the same data dir: %v, want ErrLocked", err)
	}
}
