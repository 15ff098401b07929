package main

import (
	"context"
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
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestRunEndToEnd runs `vagent run` with the real sandbox, builder images
// and builds against the test stack: two packages build at once on two
// slots, then a third whose PKGBUILD depends on one of them is built with
// pacman installing that dependency from the server's repository. Every
// package is published and every log arrives with exit code 0; /metrics
// counts the builds as they finish; SIGTERM stops the agent with exit
// status 0.
func TestRunEndToEnd(t *testing.T) {
	t.Parallel() // own stack, data dir and ports: runs beside TestRunBuildLimits
	if !sandbox.SeccompSupported {
		testkit.Unavailable(t, "vagent run needs a binary built with -tags seccomp (make test builds it so)")
	}
	testkit.RequireRoot(t)
	testkit.RequireTool(t, testkit.RegistryBinary, "docker-registry")
	bin, err := exec.LookPath("vagent") // the test binary, installed by testscript.Main
	if err != nil {
		t.Fatal(err)
	}
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
	// A build on the host network reaches the agent's own endpoints: it
	// reads /status and /metrics and tries to write to them. The agent must
	// show it nothing secret and go on serving.
	probe := strings.Replace(testkit.DemoPKGBUILD("e2e-tool", "2.0"), "package() {", `build() {
  for p in status metrics; do
    curl -s --max-time 10 -o "$p.out" "http://`+metrics.metrics+`/$p" || true
    echo "probe $p: $(wc -c <"$p.out") bytes"
    curl -s --max-time 10 -o /dev/null -w "post $p: %{http_code}\n" -X POST --data x "http://`+metrics.metrics+`/$p" || true
  done
  cat status.out; echo
}
package() {`, 1)
	tool, err := st.AddURLTarget("tool", "e2e", arch, probe)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	yaml := st.AgentYAML(filepath.Join(dir, "data"), arch, 2, time.Second) + "metrics_address: " + metrics.metrics + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out sandboxtest.Buffer
	cmd := exec.Command(bin, "run", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
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
	// One builder, prepared for the first build on the fresh data dir.
	if got := metrics.metric(t, `vagent_builder_image_preparations_total{result="success"}`); got != "1" {
		t.Errorf("vagent_builder_image_preparations_total{result=\"success\"} = %q, want 1", got)
	}
	if got := metrics.metric(t, `vagent_builder_image_preparation_duration_seconds_count`); got != "1" {
		t.Errorf("vagent_builder_image_preparation_duration_seconds_count = %q, want 1", got)
	}

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

	byTarget := map[int]int{}
	logs := st.Server.Logs()
	for _, l := range logs {
		byTarget[l.TargetID]++
		if l.ExitCode != 0 || l.Arch != arch {
			t.Errorf("target %d: exit code %d, arch %q\n%s", l.TargetID, l.ExitCode, l.Arch, l.Content)
		}
	}
	for _, id := range []int{lib, tool, app} {
		if byTarget[id] != 1 {
			t.Errorf("target %d: %d logs, want 1", id, byTarget[id])
		}
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
	for _, name := range []string{"e2e-lib", "e2e-tool", "e2e-app"} {
		if !got[name] {
			t.Errorf("package %s not published; repository has %v", name, got)
		}
	}
	// Every log starts with its header: the agent, the target, the base
	// image, and the digests of the base image and of the builder, which
	// is the one builder on disk.
	builderDigest := ""
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
		// The build read the agent's endpoints (it could: host network),
		// writing to them was refused, and nothing secret was there.
		c := string(l.Content)
		for _, re := range []string{`probe status: [1-9][0-9]* bytes`, `probe metrics: [1-9][0-9]* bytes`, `post status: 405`, `post metrics: 405`} {
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
