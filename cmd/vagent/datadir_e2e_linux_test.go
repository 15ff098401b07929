package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// probePKGBUILD is a package whose build says which optional builder
// packages the builder it runs on has.
func probePKGBUILD(name string) string {
	return testkit.DemoPKGBUILD(name, "1.0") + "build() {\n  pacman -Q extra-tool extra-other 2>&1 || true\n  grep '^SigIgn:' /proc/self/status\n}\n"
}

// opsAgent is a `vagent run` started by TestOneDataDirManyProcesses.
type opsAgent struct {
	cmd    *exec.Cmd
	out    *sandboxtest.Buffer
	exited chan error
}

// startAgent starts `vagent run cfg` with /etc overlaid by the files in
// etc (the host's users and subordinate ids, as the agent sees them), in a
// mount namespace of its own.
func startAgent(t *testing.T, bin, cfg, etc string) *opsAgent {
	t.Helper()
	work, err := os.MkdirTemp(filepath.Dir(etc), "etc-work-")
	if err != nil {
		t.Fatal(err)
	}
	upper, err := os.MkdirTemp(filepath.Dir(etc), "etc-upper-")
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("cp", "-a", etc+"/.", upper).Run(); err != nil {
		t.Fatal(err)
	}
	a := &opsAgent{out: &sandboxtest.Buffer{}, exited: make(chan error, 1)}
	a.cmd = exec.Command("unshare", "-m", "sh", "-c",
		`mount -t overlay overlay -o lowerdir=/etc,upperdir="$1",workdir="$2" /etc && shift 2 && exec "$@"`,
		"sh", upper, work, bin, "run", cfg)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.exited <- a.cmd.Wait() }()
	t.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			_ = a.cmd.Process.Kill()
			<-a.exited
		}
	})
	return a
}

// waitLine waits until the agent's output matches re.
func (a *opsAgent) waitLine(t *testing.T, re string, timeout time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(timeout)
	for {
		if m := rx.FindStringSubmatch(a.out.String()); m != nil {
			return m
		}
		select {
		case err := <-a.exited:
			a.exited <- err
			t.Fatalf("agent exited (%v) before %q:\n%s", err, re, a.out.String())
		case <-deadline:
			t.Fatalf("no %q within %v:\n%s", re, timeout, a.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (a *opsAgent) stop(t *testing.T) {
	t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.exited:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v\n%s", err, a.out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("agent did not stop within 2 minutes of SIGTERM\n%s", a.out.String())
	}
}

// waitLog waits for the log of target id on srv.
func waitLog(t *testing.T, srv *vieterserver.Server, id int, a *opsAgent) vieterserver.Log {
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		for _, l := range srv.Logs() {
			if l.TargetID == id {
				return l
			}
		}
		select {
		case err := <-a.exited:
			a.exited <- err
			t.Fatalf("agent exited (%v) before the log of target %d:\n%s", err, id, a.out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("no log of target %d:\n%s", id, a.out.String())
	return vieterserver.Log{}
}

// vagentCmd runs the vagent binary in the test's mount namespace (the
// host's /etc) and returns its exit status and output.
func vagentCmd(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	var out sandboxtest.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// leftovers lists what vagent processes that are gone left of the data
// dir's sandbox: instance directories no process holds, mounts below the
// data dir (in this mount namespace) and cgroups of instances that are
// gone.
func sandboxLeftovers(t *testing.T, data string) []string {
	t.Helper()
	var l []string
	sbDir, err := filepath.EvalSymlinks(filepath.Join(data, "sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	insts, _ := os.ReadDir(filepath.Join(sbDir, "m"))
	for _, e := range insts {
		f, err := os.Open(filepath.Join(sbDir, "m", e.Name()))
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			l = append(l, "instance of a dead process "+e.Name())
		} else {
			live[e.Name()] = true
		}
		f.Close()
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	sc := bufio.NewScanner(strings.NewReader(string(mi)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 4 && strings.HasPrefix(f[4], data+"/") {
			l = append(l, "mount "+f[4])
		}
	}
	sum := sha256.Sum256([]byte(sbDir))
	prefix := "vagent-" + hex.EncodeToString(sum[:6]) + "-"
	_ = filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.Count(strings.TrimPrefix(p, "/sys/fs/cgroup"), "/") > 6 {
			return filepath.SkipDir
		}
		if name := d.Name(); strings.HasPrefix(name, prefix) {
			if !live[strings.TrimPrefix(name, prefix)] {
				l = append(l, "cgroup "+p)
			}
			return filepath.SkipDir
		}
		return nil
	})
	return l
}

// TestOneDataDirManyProcesses is what an operator of a build VM does with
// one data dir, end to end with the real sandbox, builders and builds:
//
//   - the host's first user holds 100000:65536 in /etc/subuid and
//     /etc/subgid (the old default id_range), and the data dir was used by
//     an older vagent with that range: `vagent run` with the default
//     configuration starts, picks a free range, builds, and moves what the
//     old range left (the package cache, the older sandbox layout);
//   - `vagent build --config agent.yaml` beside the running agent builds
//     on the agent's builder (no pull, no preparation); a second `vagent
//     run` is refused naming the agent's pid;
//   - restarted with a package added to builder_packages, the agent uses
//     the same id range, and its first build has the package; a `vagent
//     build` with yet another package added has it in its first build;
//   - `vagent builder build … | head` stops cleanly: no mount, instance
//     or cgroup of it is left, the agent builds on.
func TestOneDataDirManyProcesses(t *testing.T) {
	t.Parallel()
	if !sandbox.SeccompSupported {
		testkit.Unavailable(t, "vagent run needs a binary built with -tags seccomp (make test builds it so)")
	}
	testkit.RequireTool(t, "unshare", "util-linux")
	e := newLocalBuildEnv(t)
	bin := agentBinary(t)
	for _, name := range []string{"extra-tool", "extra-other"} {
		pkg, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: name, Version: "1-1", Arch: "any", Desc: "an optional builder package"}, nil, vieterserver.Zstd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.srv.Publish("deps", pkg); err != nil {
			t.Fatal(err)
		}
	}
	dir := sandboxtest.Dir(t) // builds resolve paths below it as mapped users
	data := filepath.Join(dir, "data")

	// The host as the agent sees it: a Debian VM's first user.
	etc := filepath.Join(dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"subuid", "subgid"} {
		if err := os.WriteFile(filepath.Join(etc, f), []byte("admin:100000:65536\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The data dir of an older vagent with the old default range: a
	// package cache its builds wrote, its sandbox layout.
	oldPkg := filepath.Join(data, "pacman-cache", "pkg")
	if err := os.MkdirAll(oldPkg, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(oldPkg, "old-1-1-any.pkg.tar.zst"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(oldPkg, ".vagent.lock"), nil, 0o644); err != nil { // its pacman wrapper's
		t.Fatal(err)
	}
	for _, p := range []string{oldPkg, filepath.Join(oldPkg, "old-1-1-any.pkg.tar.zst")} {
		if err := os.Chown(p, 100000, 100000); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(data, "sandbox"), 0o711); err != nil {
		t.Fatal(err)
	}
	oldRun := filepath.Join(data, "sandbox", "runs", "vagent-0123456789abcdef", "upper")
	if err := os.MkdirAll(oldRun, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "sandbox", "lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// The jobs' PKGBUILDs, on the host's loopback: builds reach it through
	// build_network.forward.
	var pkgbuilds sync.Map
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := pkgbuilds.Load(r.URL.Path); ok {
			_, _ = io.WriteString(w, c.(string))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(files.Close)
	config := func(name string, pkgs ...string) string {
		p := filepath.Join(dir, name)
		y := fmt.Sprintf(`address: %s
api_key: test-key
arch: x86_64
data_dir: %s
polling_frequency: 1s
log_level: INFO
log_file: "-"
shutdown_grace: 1m
build_timeout: 10m
fsync: false
pacman_repos:
  - name: deps
    servers: [%q]
    sig_level: Optional TrustAll
registries:
  insecure: [%q]
builder_packages: [%s]
build_network:
  forward: [%q]
`, e.ts.URL, data, e.deps+"/$arch", e.registry, strings.Join(append([]string{"base-devel", "git"}, pkgs...), ", "), strings.TrimPrefix(files.URL, "http://"))
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfgA, cfgB, cfgC := config("a.yaml"), config("b.yaml", "extra-tool"), config("c.yaml", "extra-other")
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "PKGBUILD"), []byte(probePKGBUILD("ops-local")), 0o644); err != nil {
		t.Fatal(err)
	}
	queue := func(name string) int {
		pkgbuilds.Store("/"+name+"/PKGBUILD", probePKGBUILD(name))
		id := e.srv.AddTarget(vieterserver.Target{Kind: "url", URL: files.URL + "/" + name + "/PKGBUILD",
			Repo: "ops", Arches: []string{"x86_64"}, BaseImage: e.base, Timeout: 600})
		if err := e.srv.Enqueue(id, "x86_64", false); err != nil {
			t.Fatal(err)
		}
		return id
	}
	startRange := `id_range=([0-9]+)-([0-9]+)`

	// 1. The default configuration on the VM whose first user holds the
	// old default range: the agent starts on a free range and builds.
	agent := startAgent(t, bin, cfgA, etc)
	m := agent.waitLine(t, startRange, 5*time.Minute)
	base, _ := strconv.ParseUint(m[1], 10, 32)
	if base < 524288 || m[0] == "id_range=100000-165535" {
		t.Errorf("start line %s: want a free range of systemd's container range", m[0])
	}
	rec, err := readIDRange(filepath.Join(data, idRangeFile))
	if err != nil || uint64(rec.Base) != base {
		t.Errorf("recorded id range %+v %v, want the start line's %s", rec, err, m[0])
	}
	first := waitLog(t, e.srv, queue("ops-a"), agent)
	if first.ExitCode != 0 || strings.Contains(string(first.Content), "extra-tool 1-1") {
		t.Fatalf("first build (default settings): exit %d\n%s", first.ExitCode, first.Content)
	}
	// What the old range left is the new range's, or gone.
	_ = filepath.WalkDir(filepath.Join(data, "pacman-cache"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st := fi.Sys().(*syscall.Stat_t); st.Uid >= 100000 && st.Uid < 165536 {
				t.Errorf("%s is still owned by the old range (%d)", p, st.Uid)
			}
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(data, "sandbox", "runs")); !os.IsNotExist(err) {
		t.Errorf("the older sandbox layout's runs are still there: %v", err)
	}

	// 2. vagent build --config beside it: the agent's builder, no pull.
	blobs, _ := os.ReadDir(filepath.Join(data, "images", "blobs", "sha256"))
	code, out := vagentCmd(t, bin, "build", "--config", cfgA, "--base-image", e.base, "--out", filepath.Join(dir, "out-a"), src)
	if code != 0 || !strings.Contains(out, "vagent: success") {
		t.Fatalf("vagent build --config beside the agent: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "preparing a builder") {
		t.Errorf("vagent build prepared a builder of its own beside the agent's:\n%s", out)
	}
	if after, _ := os.ReadDir(filepath.Join(data, "images", "blobs", "sha256")); len(after) != len(blobs) {
		t.Errorf("vagent build pulled again: %d blobs, then %d", len(blobs), len(after))
	}
	// A second agent is refused, naming the first.
	code, out = vagentCmd(t, bin, "run", cfgA)
	if want := fmt.Sprintf("another vagent (pid %d) uses data dir %s", agent.cmd.Process.Pid, data); code != 1 || !strings.Contains(out, want) {
		t.Errorf("second vagent run: exit %d, want 1 and %q:\n%s", code, want, out)
	}

	// 3. Restarted with extra-tool added: the same range, and the first
	// build has it.
	agent.stop(t)
	agent = startAgent(t, bin, cfgB, etc)
	if m2 := agent.waitLine(t, startRange, 5*time.Minute); m2[0] != m[0] {
		t.Errorf("restarted: %s, before %s", m2[0], m[0])
	}
	second := waitLog(t, e.srv, queue("ops-b"), agent)
	if second.ExitCode != 0 || !strings.Contains(string(second.Content), "extra-tool 1-1") {
		t.Errorf("first build after the restart with extra-tool: exit %d, the package missing\n%s", second.ExitCode, second.Content)
	}
	if !strings.Contains(string(second.Content), "other builder settings") {
		t.Errorf("the log does not say why the build waited for a builder:\n%s", second.Content)
	}
	// vagent catches SIGPIPE; its builds do not inherit an ignored one.
	if m := regexp.MustCompile(`SigIgn:\s+([0-9a-f]+)`).FindStringSubmatch(string(second.Content)); m == nil {
		t.Errorf("no SigIgn line in the build's log:\n%s", second.Content)
	} else if ign, _ := strconv.ParseUint(m[1], 16, 64); ign&(1<<(syscall.SIGPIPE-1)) != 0 {
		t.Errorf("the build ignores SIGPIPE (SigIgn %s)", m[1])
	}

	// 4. A vagent build with extra-other added: its first build has it.
	code, out = vagentCmd(t, bin, "build", "--config", cfgC, "--base-image", e.base, "--out", filepath.Join(dir, "out-c"), src)
	if code != 0 || !strings.Contains(out, "extra-other 1-1") || !strings.Contains(out, "other builder settings") {
		t.Errorf("vagent build with extra-other: exit %d, the package or the reason missing\n%s", code, out)
	}

	// 5. A reader that goes away: the command stops and cleans up.
	for _, lines := range []int{1, 3} {
		_, out = vagentCmd(t, "bash", "-c", fmt.Sprintf(`%q builder build --config %q --force %q | head -%d; echo "status ${PIPESTATUS[0]}"`, bin, cfgA, e.base, lines))
		if !strings.Contains(out, "status 141") {
			t.Errorf("vagent builder build | head -%d: want exit status 141:\n%s", lines, out)
		}
		// With three lines read, the setup was running in its container
		// when the reader went away.
		if lines == 3 && !strings.Contains(out, "==> adding repositories") {
			t.Errorf("the third line is not the setup's:\n%s", out)
		}
		if l := sandboxLeftovers(t, data); len(l) > 0 {
			t.Errorf("vagent builder build | head -%d left:\n%s", lines, strings.Join(l, "\n"))
		}
	}
	third := waitLog(t, e.srv, queue("ops-c"), agent)
	if third.ExitCode != 0 {
		t.Errorf("the agent's build after the cancelled preparations: exit %d\n%s", third.ExitCode, third.Content)
	}
	agent.stop(t)
	if l := sandboxLeftovers(t, data); len(l) > 0 {
		t.Errorf("left after the agent stopped:\n%s", strings.Join(l, "\n"))
	}
	if insts, _ := os.ReadDir(filepath.Join(data, "sandbox", "m")); len(insts) > 0 {
		t.Errorf("instance directories left after every process ended: %v", insts)
	}
	if t.Failed() {
		t.Logf("agent output:\n%s", agent.out.String())
	}
}
