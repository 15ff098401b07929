package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// rootlessEnv is an ordinary user's vagent against the test stack.
type rootlessEnv struct {
	u    *testkit.RootlessUser
	bin  string // the test binary as the user's `vagent`
	st   *testkit.Stack
	cfg  string // ~/.config/vagent/agent.yaml
	data string // ~/.local/share/vagent: nothing configures it
	// procs are every process a vagent of the user started, as /proc
	// showed them.
	procs []testkit.ProcSample
}

// newRootlessEnv makes a user with subordinate ids, installs vagent for
// it and starts the test stack (as root: the registry and the server are
// the host's). The agent.yaml it writes sets no data_dir.
func newRootlessEnv(t testing.TB, ctx context.Context, extra string) *rootlessEnv {
	t.Helper()
	if !sandbox.SeccompSupported {
		testkit.Unavailable(t, "vagent needs a binary built with -tags seccomp (make test builds it so)")
	}
	testkit.RequireTool(t, testkit.RegistryBinary, "docker-registry")
	e := &rootlessEnv{u: testkit.NewRootlessUser(t)}
	testkit.RequireRootlessNetwork(t)
	e.bin = e.u.Install(t, agentBinary(t), "vagent")
	dir, err := os.MkdirTemp("", "vagent-rootless-stack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if e.st, err = testkit.StartStack(ctx, filepath.Join(dir, "stack"), nil); err != nil {
		if testkit.InCI() {
			t.Fatal(err)
		}
		t.Skipf("test stack unavailable: %v", err)
	}
	t.Cleanup(func() { e.st.Close() })
	e.data = filepath.Join(e.u.Home, ".local", "share", "vagent")
	yaml := e.st.AgentYAML("/unused", "x86_64", 2, time.Second)
	yaml = strings.Replace(yaml, "data_dir: /unused\n", "", 1)
	yaml = strings.Replace(yaml, "shutdown_grace: 1m\n", "shutdown_grace: 1s\n", 1) + extra
	e.cfg = filepath.Join(e.u.Home, ".config", "vagent", "agent.yaml")
	e.write(t, e.cfg, yaml, 0o600)
	return e
}

// write writes a file of the user's (its directories too).
func (e *rootlessEnv) write(t testing.TB, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	for q := p; strings.HasPrefix(q, e.u.Home+"/"); q = filepath.Dir(q) {
		if err := os.Chown(q, e.u.UID, e.u.GID); err != nil {
			t.Fatal(err)
		}
	}
}

// start starts vagent as the user, its processes watched.
func (e *rootlessEnv) start(t testing.TB, out *sandboxtest.Buffer, args ...string) (*exec.Cmd, func() error) {
	t.Helper()
	cmd := e.u.Command(e.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := testkit.WatchProcs(cmd.Process.Pid)
	return cmd, func() error {
		err := cmd.Wait()
		e.procs = append(e.procs, w.Stop()...)
		return err
	}
}

// vagent runs vagent as the user to its end and returns its output and
// exit status.
func (e *rootlessEnv) vagent(t testing.TB, args ...string) (string, int) {
	t.Helper()
	var out sandboxtest.Buffer
	cmd, wait := e.start(t, &out, args...)
	_ = wait()
	return out.String(), cmd.ProcessState.ExitCode()
}

// pkgList lists a package file's entries as bsdtar does, owners numeric.
func pkgList(t *testing.T, pkg string) string {
	t.Helper()
	out, err := exec.Command("bsdtar", "-tvf", pkg, "--numeric-owner").CombinedOutput()
	if err != nil {
		t.Fatalf("bsdtar %s: %v\n%s", pkg, err, out)
	}
	return string(out)
}

// ownersPKGBUILD makes a package whose files belong to several ids and
// one of which is setuid root, as packages of daemons and of su do.
const ownersPKGBUILD = `pkgname=rootless-owners
pkgver=1.0
pkgrel=1
pkgdesc="files of several owners"
arch=(any)
license=(MIT)
package() {
  printf '#!/bin/sh\necho hi\n' >tool
  install -Dm4755 tool "$pkgdir/usr/bin/rootless-suid"
  install -Dm0644 tool "$pkgdir/usr/share/rootless/builder-file"
  chown 1000:1000 "$pkgdir/usr/share/rootless/builder-file"
  install -dm0750 "$pkgdir/var/lib/rootless"
  chown 2:3 "$pkgdir/var/lib/rootless"
  install -Dm0600 tool "$pkgdir/var/lib/rootless/nobody-file"
  chown 65534:65534 "$pkgdir/var/lib/rootless/nobody-file"
}
`

// hostilePKGBUILD plants, from inside a build, what the agent must not
// follow or leave usable: a symbolic link to a file of the user and a FIFO
// in its package cache, setuid files owned by container root and by
// builder in the cache and in its build directory; then it floods its log
// past build_limits.log.
const hostilePKGBUILD = `pkgname=rootless-hostile
pkgver=1.0
pkgrel=1
pkgdesc="plants links and setuid files"
arch=(any)
license=(MIT)
build() {
  sudo sh -c 'c=/var/cache/pacman/pkg
    ln -s %s "$c/victim.pkg.tar.zst"
    ln -s / "$c/root-link"
    mkfifo "$c/fifo.pkg.tar.zst"
    cp /bin/sh "$c/rootsh"; chmod 4755 "$c/rootsh"
    cp /bin/sh "$c/buildersh"; chown 1000:1000 "$c/buildersh"; chmod 6755 "$c/buildersh"
    echo planted'
  cp /bin/sh suidsh; chmod 4755 suidsh
  yes 'vagent rootless log flood' | head -c 4194304
}
package() {
  install -Dm644 /dev/null "$pkgdir/usr/share/rootless-hostile"
}
`

// TestRootlessEndToEnd runs vagent as an ordinary user with a block of
// subordinate ids, as docs/rootless.md sets it up, against the test
// stack: `vagent check` passes; `vagent build` makes a package whose files
// belong to several ids, one of them setuid, and a hostile build that
// plants links and a FIFO in its package cache, leaves setuid files there
// and floods its log is contained, and one that floods the disk is
// stopped at build_limits.disk; `vagent run`, configured by
// ~/.config/vagent/agent.yaml with no data_dir, builds a package that
// depends on one from the server's repository and publishes both, hands a
// job back when stopped, and, killed with SIGKILL in the middle of a
// build, leaves nothing running and recovers. Throughout, no process
// vagent started had a host id that is not the user's or one of its
// subordinate ids (sampled from /proc), and nothing in the data dir is
// host root's or reachable by another user.
func TestRootlessEndToEnd(t *testing.T) {
	testkit.RequireRoot(t)
	// Its own user, stack and data dir: it runs beside the other end-to-end
	// tests (about a minute, most of it the first pull's unpack, which
	// -race slows down several times, and builds that wait).
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	last := time.Now()
	phase := func(name string) { // where the time goes (-v)
		t.Logf("%s: %.1f s", name, time.Since(last).Seconds())
		last = time.Now()
	}
	e := newRootlessEnv(t, ctx, "build_limits:\n  log: 2MiB\n  disk: 256MiB\n")
	u := e.u
	phase("user and stack")

	// vagent check: rootless mode is complete here.
	out, code := e.vagent(t, "check", "--config", e.cfg, "--base-image", e.st.BaseImage)
	if code != 0 || !strings.Contains(out, "this host and configuration can run vagent builds") {
		t.Fatalf("vagent check: exit %d\n%s", code, out)
	}
	for _, want := range []string{"rootless: user " + u.Name, "subordinate ids  uids ", "data dir         " + e.data} {
		if !strings.Contains(out, want) {
			t.Errorf("vagent check lacks %q:\n%s", want, out)
		}
	}

	phase("check")

	// vagent build: a package of several owners, a setuid file among them.
	outDir := filepath.Join(u.Home, "out")
	e.write(t, filepath.Join(u.Home, "src", "owners", "PKGBUILD"), ownersPKGBUILD, 0o644)
	e.write(t, filepath.Join(outDir, ".keep"), "", 0o644)
	out, code = e.vagent(t, "build", "--config", e.cfg, "--base-image", e.st.BaseImage, "--out", outDir, filepath.Join(u.Home, "src", "owners"))
	if code != 0 {
		t.Fatalf("vagent build: exit %d\n%s", code, out)
	}
	pkgs, _ := filepath.Glob(filepath.Join(outDir, "rootless-owners-1.0-1-any.pkg.tar.*"))
	if len(pkgs) != 1 {
		t.Fatalf("packages in --out: %v\n%s", pkgs, out)
	}
	if fi, err := os.Stat(pkgs[0]); err != nil || int(fi.Sys().(*syscall.Stat_t).Uid) != u.UID {
		t.Errorf("the package is not the user's: %v", err)
	}
	list := pkgList(t, pkgs[0])
	for _, want := range []string{
		"-rwsr-xr-x  0 0      0", "usr/bin/rootless-suid",
		"-rw-r--r--  0 1000   1000", "usr/share/rootless/builder-file",
		"drwxr-x---  0 2      3", "var/lib/rootless",
		"-rw-------  0 65534  65534", "var/lib/rootless/nobody-file",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("package lacks %q:\n%s", want, list)
		}
	}

	phase("build of several owners")

	// A hostile build: contained, and the user's file untouched.
	victim := filepath.Join(u.Home, "victim")
	e.write(t, victim, "the user's\n", 0o644)
	e.write(t, filepath.Join(u.Home, "src", "hostile", "PKGBUILD"), fmt.Sprintf(hostilePKGBUILD, victim), 0o644)
	out, code = e.vagent(t, "build", "--config", e.cfg, "--base-image", e.st.BaseImage, "--out", outDir, filepath.Join(u.Home, "src", "hostile"))
	if !strings.Contains(out, "planted") || !strings.Contains(out, "the build's output exceeded the log limit") {
		t.Errorf("hostile build: exit %d, no planting or no log cut:\n%.4000s", code, out)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "the user's\n" {
		t.Errorf("the user's file after the hostile build: %q, %v", b, err)
	}
	cache := filepath.Join(e.data, "pacman-cache")
	err := filepath.Walk(cache, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode()&(os.ModeSymlink|os.ModeNamedPipe) != 0 {
			t.Errorf("left in the package cache: %s (%v)", p, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	phase("hostile build")

	// A disk flood: stopped at build_limits.disk, as rootful.
	e.write(t, filepath.Join(u.Home, "src", "flood", "PKGBUILD"), strings.Replace(testkit.DemoPKGBUILD("rootless-flood", "1.0"),
		"package() {", "build() {\n  dd if=/dev/zero of=big bs=1M count=512 || true\n  sleep 30\n}\npackage() {", 1), 0o644)
	out, code = e.vagent(t, "build", "--config", e.cfg, "--base-image", e.st.BaseImage, "--out", outDir, filepath.Join(u.Home, "src", "flood"))
	if code == 0 || !strings.Contains(out, "exceeded its disk limit of 268435456 bytes") {
		t.Errorf("disk flood: exit %d:\n%.3000s", code, out)
	}

	phase("disk flood")

	// vagent run, from the user's XDG configuration: a package from the
	// server's repository as a dependency; a job handed back on SIGTERM.
	lib, err := e.st.AddURLTarget("lib", "rl", "x86_64", testkit.DemoPKGBUILD("rl-lib", "1.0"))
	if err != nil {
		t.Fatal(err)
	}
	var rout sandboxtest.Buffer
	cmd, wait := e.start(t, &rout, "run")
	exited := make(chan error, 1)
	go func() { exited <- wait() }()
	waitLogs := func(n int) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Minute)
		defer wcancel()
		done := make(chan error, 1)
		go func() { _, err := e.st.WaitLogs(wctx, n); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%v\nagent output:\n%s", err, rout.String())
			}
		case err := <-exited:
			t.Fatalf("agent exited early: %v\n%s", err, rout.String())
		}
	}
	waitLogs(1)
	app, err := e.st.AddURLTarget("app", "rl", "x86_64", testkit.DemoPKGBUILD("rl-app", "1.0", "rl-lib"))
	if err != nil {
		t.Fatal(err)
	}
	waitLogs(2)
	sleeper := strings.Replace(testkit.DemoPKGBUILD("rl-sleep", "1.0"), "package() {", "build() {\n  echo 'sleeping build'\n  sleep 600\n}\npackage() {", 1)
	slept, err := e.st.AddURLTarget("sleep", "rl", "x86_64", sleeper)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the sleeping build", func() bool { return len(subordinateProcs(u, "sleep 600")) > 0 })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("agent after SIGTERM: %v\n%s", err, rout.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("agent did not stop\n%s", rout.String())
	}
	if q := e.st.Server.Queued("x86_64"); len(q) != 1 || q[0].TargetID != slept {
		t.Errorf("queue %+v, want the sleeping job handed back", q)
	}

	phase("run: two builds, one handed back")

	// kill -9 in the middle of that build, run again by a new agent.
	rout.Reset()
	cmd, wait = e.start(t, &rout, "run")
	exited = make(chan error, 1)
	go func() { exited <- wait() }()
	eventually(t, "the sleeping build again", func() bool { return len(subordinateProcs(u, "sleep 600")) > 0 })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	eventually(t, "every process of the killed agent gone", func() bool { return len(u.Procs()) == 0 })
	e.st.ServeFile("sleep/PKGBUILD", testkit.DemoPKGBUILD("rl-sleep", "1.0"))
	rout.Reset()
	cmd, wait = e.start(t, &rout, "run")
	exited = make(chan error, 1)
	go func() { exited <- wait() }()
	waitLogs(5) // handed back, killed (uploaded by the new agent), rebuilt
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Errorf("agent after SIGTERM: %v\n%s", err, rout.String())
	}

	phase("run: kill -9, restart")

	got := map[string]bool{}
	for _, p := range e.st.Server.Packages("rl", "x86_64") {
		got[p.Info.Name] = true
	}
	for _, name := range []string{"rl-lib", "rl-app", "rl-sleep"} {
		if !got[name] {
			t.Errorf("package %s not published; repository has %v", name, got)
		}
	}
	for _, l := range e.st.Server.Logs() {
		if (l.TargetID == lib || l.TargetID == app) && l.ExitCode != 0 {
			t.Errorf("target %d: exit %d\n%s", l.TargetID, l.ExitCode, l.Content)
		}
		if l.TargetID == app && !strings.Contains(string(l.Content), "rl-lib") {
			t.Errorf("app's log does not mention installing rl-lib:\n%s", l.Content)
		}
	}

	// The data dir, afterwards: no instance of a sandbox left (the killed
	// agent's was recovered, the others removed at their end), and no id
	// range recorded (a root agent's id-range.json means nothing here).
	if left, _ := filepath.Glob(filepath.Join(e.data, "sandbox", "m", "*")); len(left) > 0 {
		t.Errorf("sandbox instances left in the data dir: %v", left)
	}
	if _, err := os.Stat(filepath.Join(e.data, idRangeFile)); !os.IsNotExist(err) {
		t.Errorf("a rootless agent recorded an id range (%s): %v", idRangeFile, err)
	}

	// The host, afterwards.
	if n := u.CheckProcs(t, e.procs); n < 20 {
		t.Errorf("saw only %d processes of vagent: the watch missed the builds", n)
	}
	if p := u.Procs(); len(p) > 0 {
		t.Errorf("processes of the user left running: %v", p)
	}
	n, sub := u.CheckOwners(t, e.data)
	t.Logf("data dir: %d entries, %d owned by subordinate ids; %d processes seen", n, sub, len(e.procs))
	if sub == 0 {
		t.Error("nothing in the data dir is a subordinate id's: the builds' files are the user's")
	}
	// No setuid file there is reachable by another host user.
	err = filepath.Walk(e.data, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 && !fi.IsDir() {
			st := fi.Sys().(*syscall.Stat_t)
			if int(st.Uid) == u.UID {
				t.Errorf("%s is setuid the user", p)
			}
			if nobodyReaches(p) {
				t.Errorf("another user reaches the setuid file %s", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if t.Failed() {
		t.Logf("last agent output:\n%s", rout.String())
	}
}

// subordinateProcs lists the processes with a subordinate id of u whose
// command line contains s.
func subordinateProcs(u *testkit.RootlessUser, s string) []int {
	var out []int
	for _, pid := range u.Procs() {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) {
			out = append(out, pid)
		}
	}
	return out
}

// nobodyReaches tells whether uid 65534 can stat p.
func nobodyReaches(p string) bool {
	cmd := exec.Command("stat", p)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	return cmd.Run() == nil
}

// TestRootlessUnavailable runs vagent as a user without subordinate ids
// (nobody): `vagent check` names what rootless mode lacks with the command
// that adds it, and a build refuses with exit status 69 saying the same,
// before it touches anything.
func TestRootlessUnavailable(t *testing.T) {
	testkit.RequireRoot(t)
	dir := sandboxtest.Dir(t)
	bin := filepath.Join(dir, "vagent")
	if out, err := exec.Command("cp", agentBinary(t), bin).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin:/usr/sbin:/sbin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := run("check")
	for _, want := range []string{
		"MISSING  privileges       rootless: user nobody (uid 65534) could not enter a user namespace of its own",
		"MISSING  subordinate ids  user nobody has no entry in /etc/subuid and /etc/subgid: sudo usermod --add-subuids ",
		"ok       newuidmap        /usr/bin/newuidmap",
		"MISSING  overlayfs        not tried: needs the user namespace",
		"data dir         " + filepath.Join(home, ".local/share/vagent"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("vagent check lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("vagent check: exit %d, want 1", code)
	}
	src := filepath.Join(home, "pkg")
	out, code = run("build", src)
	if code != exitUnavailable || !strings.Contains(out, "rootless mode is not available\n  subordinate ids: user nobody has no entry") {
		t.Errorf("vagent build: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(home, ".local")); err == nil {
		t.Error("the refused build made a data dir")
	}
}
