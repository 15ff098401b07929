package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestRunEndToEnd runs `vagent run` with the real sandbox, builder images
// and builds against the test stack, everything on the host's loopback
// and every build on the isolated network: two packages build at once on
// two slots, then a third whose PKGBUILD depends on one of them is built
// with pacman installing that dependency from the server's repository, and
// a fourth is cloned from a git server on the loopback, reached through
// build_network.forward. Every package is published and every log arrives
// with exit code 0; /metrics counts the builds as they finish; a build
// cannot reach the agent's own endpoints. Then the agent is killed (-9)
// in the middle of a build and started again: nothing of the killed
// build's network is left (its namespace, pasta, interfaces, rules), and
// the host's interfaces and rules are as before. SIGTERM stops the agent
// with exit status 0.
func TestRunEndToEnd(t *testing.T) {
	t.Parallel() // own stack, data dir and ports: runs beside TestRunBuildLimits
	if !sandbox.SeccompSupported {
		testkit.Unavailable(t, "vagent run needs a binary built with -tags seccomp (make test builds it so)")
	}
	testkit.RequireRoot(t)
	testkit.RequireTool(t, testkit.RegistryBinary, "docker-registry")
	bin := agentBinary(t)
	dir, err := os.MkdirTemp("", "vagent-run-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Minute)
	defer cancel()
	st, err := testkit.StartStack(ctx, filepath.Join(dir, "stack"), nil)
	if err != nil {
		if testkit.InCI() {
			t.Fatal(err)
		}
		t.Skipf("test stack unavailable: %v", err)
	}
	defer st.Close()

	const arch = "x86_64"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics := &runEnv{metrics: ln.Addr().String()}
	ln.Close()
	lib, err := st.AddURLTarget("lib", "e2e", arch, testkit.DemoPKGBUILD("e2e-lib", "1.0"))
	if err != nil {
		t.Fatal(err)
	}
	// The agent's own endpoints are on the host's loopback: a build tries
	// to read /status and /metrics and to write to them, and reaches
	// neither (an isolated build; with the host network it would).
	probe := strings.Replace(testkit.DemoPKGBUILD("e2e-tool", "2.0"), "package() {", `build() {
  for p in status metrics; do
    echo "probe $p: $(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://`+metrics.metrics+`/$p")"
    curl -s --max-time 10 -o /dev/null -w "post $p: %{http_code}\n" -X POST --data x "http://`+metrics.metrics+`/$p" || true
  done
}
package() {`, 1)
	tool, err := st.AddURLTarget("tool", "e2e", arch, probe)
	if err != nil {
		t.Fatal(err)
	}
	// A git server on the host's loopback, forwarded by the configuration.
	git := testkit.NewGitServer(t)
	gitURL := git.Commit(t, "e2e-git", "", map[string]string{"PKGBUILD": testkit.DemoPKGBUILD("e2e-git", "3.0")})
	gitEndpoint, _ := sandbox.URLEndpoint(gitURL)
	cfg := filepath.Join(dir, "agent.yaml")
	data := filepath.Join(dir, "data")
	yaml := st.AgentYAML(data, arch, 2, time.Second) + "metrics_address: " + metrics.metrics + "\n" +
		"build_network:\n  forward: [" + gitEndpoint + "]\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	hostLinks, hostRules := hostNetwork(t)
	var out sandboxtest.Buffer
	var cmd *exec.Cmd
	var exited chan error
	start := func() {
		cmd = exec.Command(bin, "run", cfg)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited = make(chan error, 1)
		go func(cmd *exec.Cmd, exited chan error) { exited <- cmd.Wait() }(cmd, exited)
	}
	start()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	waitLogs := func(n int) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Minute)
		defer wcancel()
		done := make(chan error, 1)
		go func() { _, err := st.WaitLogs(wctx, n); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%v\nagent output:\n%s", err, out.String())
			}
		case err := <-exited:
			t.Fatalf("agent exited early: %v\n%s", err, out.String())
		}
	}
	// /status has the phase of each running build: they are seen
	// preparing the builder and building.
	phases := map[string]bool{}
	statusDone := make(chan struct{})
	stopStatus := make(chan struct{})
	go func() {
		defer close(statusDone)
		for {
			for _, s := range agentStatus(t, metrics.metrics).Slots {
				phases[string(s.Phase)] = true
			}
			select {
			case <-stopStatus:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	waitLogs(2)
	close(stopStatus)
	<-statusDone
	if !phases["preparing builder"] || !phases["building"] {
		t.Errorf("phases seen in /status: %v; want preparing builder and building", phases)
	}
	// /metrics counts the builds as they finish (the log is uploaded after
	// the build is counted).
	const successes = `vagent_builds_total{result="success"}`
	if got := metrics.metric(t, successes); got != "2" {
		t.Errorf("after two builds %s = %q, want 2", successes, got)
	}
	if got := metrics.metric(t, "vagent_image_pulled_bytes_total"); got == "" || got == "0" {
		t.Errorf("vagent_image_pulled_bytes_total = %q after pulling the base image", got)
	}
	app, err := st.AddURLTarget("app", "e2e", arch, testkit.DemoPKGBUILD("e2e-app", "0.1", "e2e-lib"))
	if err != nil {
		t.Fatal(err)
	}
	waitLogs(3)
	if got := metrics.metric(t, successes); got != "3" {
		t.Errorf("after three builds %s = %q, want 3", successes, got)
	}
	if got := metrics.metric(t, `vagent_build_duration_seconds_count{result="success"}`); got != "3" {
		t.Errorf("vagent_build_duration_seconds_count = %q, want 3", got)
	}
	gitID := st.Server.AddTarget(vieterserver.Target{Kind: "git", URL: gitURL, Repo: "e2e", Arches: []string{arch}, BaseImage: st.BaseImage, Timeout: 600})
	if err := st.Server.Enqueue(gitID, arch, false); err != nil {
		t.Fatal(err)
	}
	waitLogs(4)
	// One builder, prepared for the first build on the fresh data dir.
	if got := metrics.metric(t, `vagent_builder_image_preparations_total{result="success"}`); got != "1" {
		t.Errorf("vagent_builder_image_preparations_total{result=\"success\"} = %q, want 1", got)
	}
	if got := metrics.metric(t, `vagent_builder_image_preparation_duration_seconds_count`); got != "1" {
		t.Errorf("vagent_builder_image_preparation_duration_seconds_count = %q, want 1", got)
	}

	// kill -9 in the middle of a build, then a new agent on the data dir.
	const sleeper = "e2e-killed"
	sleepID, err := st.AddURLTarget(sleeper, "e2e", arch, strings.Replace(testkit.DemoPKGBUILD(sleeper, "1.0"), "package() {",
		"build() {\n  echo 'killed build running'\n  sleep 600\n}\npackage() {", 1))
	if err != nil {
		t.Fatal(err)
	}
	ns := waitNetns(t, data, exited, &out)
	var nsStat syscall.Stat_t
	if err := syscall.Stat(ns, &nsStat); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	// The server hands the build out again after the restart: it builds
	// quickly now.
	st.ServeFile(sleeper+"/PKGBUILD", testkit.DemoPKGBUILD(sleeper, "1.0"))
	start()
	waitLogs(6) // the killed build's log (uploaded by the new agent) and its rebuild's
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("agent did not stop within 2 minutes of SIGTERM\n%s", out.String())
	}
	for _, l := range leftNetwork(t, data, nsStat.Ino) {
		t.Errorf("left of the killed build's network: %s", l)
	}
	if links, rules := hostNetwork(t); links != hostLinks || rules != hostRules {
		t.Errorf("the host's network changed:\nlinks before %s\nafter %s\nrules before %s\nafter %s", hostLinks, links, hostRules, rules)
	}

	byTarget := map[int]int{}
	logs := st.Server.Logs()
	for _, l := range logs {
		byTarget[l.TargetID]++
		if l.TargetID == sleepID {
			continue // the killed build's log ends as the new agent found it
		}
		if l.ExitCode != 0 || l.Arch != arch {
			t.Errorf("target %d: exit code %d, arch %q\n%s", l.TargetID, l.ExitCode, l.Arch, l.Content)
		}
	}
	for _, id := range []int{lib, tool, app, gitID} {
		if byTarget[id] != 1 {
			t.Errorf("target %d: %d logs, want 1", id, byTarget[id])
		}
	}
	if byTarget[sleepID] != 2 {
		t.Errorf("the killed build's target has %d logs, want 2 (the killed build's, the rebuild's)", byTarget[sleepID])
	}
	// The first two builds ran at the same time on the two slots.
	var first []int
	for i, l := range logs {
		if l.TargetID == lib || l.TargetID == tool {
			first = append(first, i)
		}
	}
	if len(first) == 2 {
		a, b := logs[first[0]], logs[first[1]]
		if !a.StartTime.Before(b.EndTime) || !b.StartTime.Before(a.EndTime) {
			t.Errorf("builds did not overlap: %v–%v and %v–%v", a.StartTime, a.EndTime, b.StartTime, b.EndTime)
		}
	}
	got := map[string]bool{}
	for _, p := range st.Server.Packages("e2e", arch) {
		got[p.Info.Name] = true
	}
	for _, name := range []string{"e2e-lib", "e2e-tool", "e2e-app", "e2e-git", sleeper} {
		if !got[name] {
			t.Errorf("package %s not published; repository has %v", name, got)
		}
	}
	// Every log starts with its header: the agent, the target, the base
	// image, and the digests of the base image and of the builder, which
	// is the one builder on disk.
	builderDigest, version := "", agentVersion(t)
	for _, l := range logs {
		head, _, ok := strings.Cut(string(l.Content), "\n\n")
		fields := map[string]string{}
		for _, line := range strings.Split(head, "\n") {
			kv, ok1 := strings.CutPrefix(line, "vagent: ")
			k, v, ok2 := strings.Cut(kv, ": ")
			ok = ok && ok1 && ok2
			fields[k] = v
		}
		hexRE := regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
		if !ok || fields["agent"] == "" || fields["version"] != version || fields["target"] != strconv.Itoa(l.TargetID) ||
			fields["base image"] != st.BaseImage || !hexRE.MatchString(fields["base image digest"]) || !hexRE.MatchString(fields["builder digest"]) {
			t.Errorf("target %d: header %v:\n%s", l.TargetID, fields, head)
			continue
		}
		if builderDigest != "" && fields["builder digest"] != builderDigest {
			t.Errorf("target %d built on %s, another on %s", l.TargetID, fields["builder digest"], builderDigest)
		}
		builderDigest = fields["builder digest"]
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "builders", "b", strings.TrimPrefix(builderDigest, "sha256:"))); err != nil {
		t.Errorf("the header's builder digest %s names no builder on disk: %v", builderDigest, err)
	}
	// The agent said what each job did, at the level the stack's agent.yaml
	// sets, INFO (the default).
	for _, id := range []int{lib, tool, app} {
		for _, msg := range []string{"build started", "build finished", "build log uploaded"} {
			if !regexp.MustCompile(`msg="` + msg + `".* target=` + strconv.Itoa(id) + `\b`).MatchString(out.String()) {
				t.Errorf("no %q line for target %d", msg, id)
			}
		}
	}
	for _, l := range logs {
		if l.TargetID == app && !strings.Contains(string(l.Content), "e2e-lib") {
			t.Errorf("app's log does not mention installing e2e-lib:\n%s", l.Content)
		}
		if l.TargetID != tool {
			continue
		}
		// The build reached neither of the agent's endpoints, and no
		// secret reached the build.
		c := string(l.Content)
		for _, re := range []string{`probe status: 000\n`, `probe metrics: 000\n`, `post status: 000\n`, `post metrics: 000\n`} {
			if !regexp.MustCompile(re).MatchString(c) {
				t.Errorf("tool's log lacks %s:\n%s", re, c)
			}
		}
		if strings.Contains(c, testkit.StackAPIKey) {
			t.Errorf("the API key reached a build through the agent's endpoints:\n%s", c)
		}
	}
	if t.Failed() {
		t.Logf("agent output:\n%s", out.String())
	}
}

// waitNetns waits until a build's network namespace appears in the data
// directory and returns its file.
func waitNetns(t *testing.T, data string, exited chan error, out *sandboxtest.Buffer) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		if ns, _ := filepath.Glob(filepath.Join(data, "sandbox", "m", "*", "netns", "*")); len(ns) == 1 {
			// The build's namespace, with its container and pasta.
			var st syscall.Stat_t
			if syscall.Stat(ns[0], &st) == nil && len(testkit.NetnsHolders(st.Ino)) > 0 && len(testkit.PastaProcs(data)) > 0 {
				return ns[0]
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("agent exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("no build network appeared\n%s", out.String())
	return ""
}

// leftNetwork lists what remains of the network namespace with inode ino
// and of the pasta processes of the data directory.
func leftNetwork(t *testing.T, data string, ino uint64) []string {
	t.Helper()
	var l []string
	for _, p := range testkit.NetnsHolders(ino) {
		l = append(l, "process in the namespace: "+p)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), fmt.Sprintf("net:[%d]", ino)) {
		l = append(l, "the namespace is still mounted")
	}
	for _, p := range testkit.PastaProcs(data) {
		l = append(l, "pasta: "+p)
	}
	if ns, _ := filepath.Glob(filepath.Join(data, "sandbox", "m", "*", "netns", "*")); len(ns) > 0 {
		l = append(l, fmt.Sprintf("namespace files: %v", ns))
	}
	return l
}

// hostNetwork describes the host's interfaces and routing rules.
func hostNetwork(t *testing.T) (links, rules string) {
	t.Helper()
	l, err := exec.Command("ip", "-o", "link").Output()
	if err != nil {
		t.Skipf("needs ip (iproute2): %v", err)
	}
	r4, err := exec.Command("ip", "rule").Output()
	if err != nil {
		t.Fatal(err)
	}
	r6, _ := exec.Command("ip", "-6", "rule").Output()
	// Interface counters and states of other tests' containers come and
	// go: keep the names.
	var names []string
	for _, line := range strings.Split(string(l), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return strings.Join(names, " "), string(r4) + string(r6)
}

// TestRunNeedsIsolatedNetwork: `vagent run` with the default isolated
// network refuses to start, saying what is missing and how to fix it, when
// pasta is not there (no job is taken: the server is never polled); with
// build_network.mode: host it starts, and warns that it is unsafe.
func TestRunNeedsIsolatedNetwork(t *testing.T) {
	t.Parallel()
	if !sandbox.SeccompSupported {
		testkit.Unavailable(t, "vagent run needs a binary built with -tags seccomp (make test builds it so)")
	}
	testkit.RequireRoot(t)
	bin := agentBinary(t)
	srv, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey("k"))
	dir := sandboxtest.Dir(t)
	run := func(mode string) (*exec.Cmd, *sandboxtest.Buffer) {
		cfg := filepath.Join(dir, mode+".yaml")
		yaml := fmt.Sprintf("address: %s\napi_key: k\ndata_dir: %s\npolling_frequency: 1s\nlog_level: INFO\nlog_file: '-'\nbuild_network:\n  mode: %s\n",
			ts.URL, filepath.Join(dir, "data-"+mode), mode)
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var out sandboxtest.Buffer
		cmd := exec.Command(bin, "run", cfg)
		// A PATH without pasta.
		cmd.Env = append(os.Environ(), "PATH="+t.TempDir())
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	cmd, out := run("isolated")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || cmd.ProcessState.ExitCode() == 0 {
			t.Errorf("vagent run without pasta: %v, want a failure\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("vagent run without pasta did not exit\n%s", out.String())
	}
	for _, want := range []string{"build_network.mode isolated", "pasta not found (install passt"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if n := srv.Requests(vieterserver.RoutePoll); n != 0 {
		t.Errorf("the agent polled %d times", n)
	}

	cmd, out = run("host")
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	eventually(t, "a poll of the host-network agent", func() bool { return srv.Requests(vieterserver.RoutePoll) > 0 })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("vagent run on the host network: %v\n%s", err, out.String())
	}
	if srv.Requests(vieterserver.RoutePoll) == 0 || !strings.Contains(out.String(), "build_network.mode: host is unsafe") {
		t.Errorf("the host-network agent did not poll, or did not warn:\n%s", out.String())
	}
}
