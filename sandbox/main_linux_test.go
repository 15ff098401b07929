package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// lateInitMarker is printed by this test package's initialiser when it runs
// in a re-executed container init, which it must not: the sandbox package
// dispatches a container init from its own init function, before Go
// initialises the packages that import it (see init_linux.go).
const lateInitMarker = "vagent-test: late initialiser ran in a container init"

var _ = func() int {
	if len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
		fmt.Fprintln(os.Stderr, lateInitMarker)
	}
	return 0
}()

func TestContainerInitSkipsLaterInitialisers(t *testing.T) {
	m := newManager(t).m
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, m, rootfs, "echo ran")
	if res.ExitCode != 0 || out != "ran\n" {
		t.Fatalf("exit %d, output %q (want only the command's output)", res.ExitCode, out)
	}
}

// needRoot skips tests that need host root, and fails them in CI
// (testkit.RequireRoot's policy).
func needRoot(t testing.TB) {
	t.Helper()
	testkit.RequireRoot(t)
}

// testEnv is a Manager on a fresh data directory with its own cgroup
// parent, so that leak checks can look at exactly what it owns.
type testEnv struct {
	m      *sandbox.Manager
	dir    string
	parent string
}

// newManager returns a Manager on a fresh data directory, closed (and
// checked for leftovers) when the test ends.
func newManager(t testing.TB, opts ...sandbox.Option) *testEnv {
	t.Helper()
	needRoot(t)
	return newManagerIn(t, sandboxtest.Dir(t), opts...)
}

// newManagerIn is newManager on the given data directory.
func newManagerIn(t testing.TB, dir string, opts ...sandbox.Option) *testEnv {
	t.Helper()
	needRoot(t)
	e := &testEnv{dir: dir, parent: fmt.Sprintf("vagent-test-%d-%d", os.Getpid(), parentSeq.Add(1))}
	opts = append([]sandbox.Option{sandbox.WithSeccomp(sandbox.SeccompSupported), sandbox.WithCgroupParent(e.parent)}, opts...)
	m, err := sandbox.New(e.dir, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.m = m
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if l := leftovers(e.dir, e.parent, true); len(l) > 0 {
			t.Errorf("left behind after Close:\n%s", strings.Join(l, "\n"))
		}
	})
	return e
}

var parentSeq atomic.Int64

// leftovers lists what runs of a Manager left behind: mounts under its data
// directory, container state, run, kept and network namespace entries,
// pasta processes, cgroups below its parent (or the parent itself after
// Close) and processes in them.
func leftovers(dataDir, parent string, closed bool) []string {
	var l []string
	mi, _ := readMountinfo()
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dataDir+"/") {
			l = append(l, "mount "+f[4])
		}
	}
	// An older vagent's directories, and each Manager's instance but
	// those of live Managers sharing the directory (they hold a lock).
	var insts []string
	all, _ := filepath.Glob(filepath.Join(dataDir, "m", "*"))
	for _, p := range all {
		if f, err := os.Open(p); err == nil {
			if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
				insts = append(insts, p)
			}
			f.Close()
		}
	}
	for _, base := range append([]string{dataDir}, insts...) {
		for _, sub := range []string{"state", "runs", "kept", "netns"} {
			entries, _ := os.ReadDir(filepath.Join(base, sub))
			for _, e := range entries {
				rel, _ := filepath.Rel(dataDir, filepath.Join(base, sub, e.Name()))
				l = append(l, rel)
			}
		}
		if closed && base != dataDir {
			owner, _ := os.ReadFile(filepath.Join(base, "owner.json"))
			l = append(l, "instance "+base+" "+string(owner))
		}
	}
	for _, p := range testkit.PastaProcs(dataDir) {
		l = append(l, "pasta "+p)
	}
	for _, p := range cgroupParentDirs(parent) {
		if closed {
			if _, err := os.Stat(p); err == nil {
				l = append(l, "cgroup "+p)
			}
			continue
		}
		entries, _ := os.ReadDir(p)
		for _, e := range entries {
			if e.IsDir() {
				l = append(l, "cgroup "+filepath.Join(p, e.Name()))
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, f := range procs {
		stat, _ := os.ReadFile(filepath.Join(filepath.Dir(f), "stat"))
		if _, rest, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(rest, "Z") {
			continue // a zombie is dead: only its parent (maybe host init) can reap it
		}
		if data, err := os.ReadFile(f); err == nil && strings.Contains(string(data), "/"+parent+"/") {
			cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(f), "cmdline"))
			l = append(l, fmt.Sprintf("process %s %q %q %q", f, cmdline, stat, data))
		}
	}
	return l
}

// cgroupParentDirs returns where a Manager's cgroup parent named name may
// be: at the root of each hierarchy (cgroup v1, or v2 with the agent in the
// real root cgroup) and below the agent's own cgroup v2 (whose leaf the
// Manager moved it into).
func cgroupParentDirs(name string) []string {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	var dirs []string
	for _, r := range roots {
		dirs = append(dirs, filepath.Join(r, name))
	}
	data, _ := os.ReadFile("/proc/self/cgroup")
	for _, line := range strings.Split(string(data), "\n") {
		if own, ok := strings.CutPrefix(line, "0::"); ok && own != "/" {
			if filepath.Base(own) == "vagent-agent" {
				own = filepath.Dir(own)
			}
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup", own, name))
		}
	}
	return dirs
}

var pathEnv = []string{"PATH=/bin:/usr/bin", "HOME=/root"}

// sh runs a shell script in rootfs and returns the result and its output.
func sh(t testing.TB, m *sandbox.Manager, rootfs, script string, mod ...func(*sandbox.Spec)) (*sandbox.Result, string) {
	t.Helper()
	var out sandboxtest.Buffer
	spec := sandbox.Spec{Lower: rootfs, Args: []string{"/bin/sh", "-c", script}, Env: pathEnv, Output: &out}
	for _, f := range mod {
		f(&spec)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	res, err := m.Run(ctx, spec)
	if err != nil {
		t.Fatalf("Run(%q): %v", script, err)
	}
	return res, out.String()
}

func TestSmoke(t *testing.T) {
	m := newManager(t).m
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, m, rootfs, "echo hello; id; exit 3")
	t.Logf("res=%+v out=%q", res, out)
	if res.ExitCode != 3 || !strings.Contains(out, "hello") {
		t.Fatalf("got %+v %q", res, out)
	}
}

func exec1(name string, args ...string) error { return osexec.Command(name, args...).Run() }

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// readMountinfo reads the mount table of the calling thread's namespace
// (see mountPoints in recover_linux.go for why not /proc/self).
func readMountinfo() ([]byte, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return os.ReadFile("/proc/thread-self/mountinfo")
}
