package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/poll"
)

// runChildEnv makes the test binary run `vagent run` with testExecutor:
// the tests run the agent as a process of its own, to signal it.
const runChildEnv = "VAGENT_TEST_RUN_CHILD"

func init() {
	if os.Getenv(runChildEnv) != "" {
		newExecutor = func(context.Context, *Config, runDeps) (poll.Executor, func() error, error) {
			return testExecutor, nil, nil
		}
		os.Exit(run1(os.Args[1:], os.Stdout, os.Stderr))
	}
}

// gateEnv names a file the "gate" builds of testExecutor wait for.
const gateEnv = "VAGENT_TEST_GATE"

// testExecutor is a test double selected by the job's repo: "ok" succeeds
// at once, "block" runs until cancelled, "stuck" ignores cancellation,
// "gate" reports the building phase and a builder digest, writes a line
// and waits until the file $VAGENT_TEST_GATE exists.
var testExecutor = poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) {
	fmt.Fprintf(log, "test build of target %d (%s)\n", j.TargetID, j.Repo)
	switch j.Repo {
	case "block":
		<-ctx.Done()
		return poll.Outcome{ExitCode: 1}, nil
	case "stuck":
		select {}
	case "gate":
		poll.ReportHeader(ctx, "builder digest", "sha256:test")
		poll.ReportPhase(ctx, poll.PhaseBuilding)
		fmt.Fprintln(log, "waiting at the gate")
		for {
			if _, err := os.Stat(os.Getenv(gateEnv)); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return poll.Outcome{ExitCode: 1}, nil
			case <-time.After(10 * time.Millisecond):
			}
		}
		fmt.Fprintln(log, "through the gate")
	}
	return poll.Outcome{}, nil
})

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type runEnv struct {
	srv        *vieterserver.Server
	dir, cfg   string
	metrics    string
	stderr     *os.File
	stderrPath string
	env        []string // more environment for the agent
	// stderrAsJournal: JOURNAL_STREAM names the agent's stderr, as
	// under systemd.
	stderrAsJournal bool
}

func newRunEnv(t *testing.T, extra string) *runEnv {
	t.Helper()
	srv, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey(testKey))
	dir := t.TempDir()
	e := &runEnv{srv: srv, dir: filepath.Join(dir, "data"), cfg: filepath.Join(dir, "agent.yaml"), metrics: freeAddr(t)}
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	level := "log_level: debug\n"
	if strings.Contains(extra, "log_level:") {
		level = "" // extra's, or "log_level: default" for none
		extra = strings.ReplaceAll(extra, "log_level: default\n", "")
	}
	cfg := fmt.Sprintf("address: %s\narch: x86_64\ndata_dir: %s\nmax_concurrent_builds: 2\npolling_frequency: 1\n%smetrics_address: %s\nfsync: false\n%s",
		ts.URL, e.dir, level, e.metrics, extra)
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIETER_API_KEY_FILE", keyFile)
	return e
}

func (e *runEnv) add(t *testing.T, repo string) int {
	t.Helper()
	id := e.srv.AddTarget(vieterserver.Target{Kind: "git", URL: "https://example.org/" + repo + ".git", Repo: repo})
	if err := e.srv.Enqueue(id, "x86_64", false); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *runEnv) start(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "run", e.cfg)
	cmd.Env = append(append(os.Environ(), runChildEnv+"=1"), e.env...)
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	if e.stderrAsJournal {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(cmd.Env, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	}
	e.stderr, e.stderrPath = f, f.Name()
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		f.Close()
	})
	return cmd
}

// stderrCount tells how often the agent's standard error has s so far.
func (e *runEnv) stderrCount(s string) int {
	b, _ := os.ReadFile(e.stderrPath)
	return strings.Count(string(b), s)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("vagent run did not exit")
	}
	return cmd.ProcessState.ExitCode()
}

func (e *runEnv) metric(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.metrics + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestRunGraceful: `vagent run` builds jobs, serves metrics, and on
// SIGTERM hands the unfinished job back, uploads its log and exits 0; the
// log file has the run and no line shows the API key.
func TestRunGraceful(t *testing.T) {
	e := newRunEnv(t, "shutdown_grace: 0s\n")
	for range 3 {
		e.add(t, "ok")
	}
	cmd := e.start(t)
	eventually(t, "3 logs", func() bool { return len(e.srv.Logs()) == 3 })
	eventually(t, "the builds counted in /metrics", func() bool { return e.metric(t, `vagent_builds_total{result="success"}`) == "3" })
	blocked := e.add(t, "block")
	eventually(t, "a running build", func() bool { return e.metric(t, `vagent_slots{state="running"}`) == "1" })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit %d", code)
	}
	logs := e.srv.Logs()
	if len(logs) != 4 || logs[3].TargetID != blocked || logs[3].ExitCode != 1 || !strings.Contains(string(logs[3].Content), "handed back") {
		t.Errorf("logs %+v", logs)
	}
	if q := e.srv.Queued("x86_64"); len(q) != 1 || q[0].TargetID != blocked {
		t.Errorf("queue %+v, want the blocked job back", q)
	}
	stderr, _ := os.ReadFile(e.stderrPath)
	logFile, err := os.ReadFile(filepath.Join(e.dir, "vagent.log"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"stderr": stderr, "vagent.log": logFile} {
		s := string(b)
		if !strings.Contains(s, "vagent running") || !strings.Contains(s, "build log uploaded") || !strings.Contains(s, "vagent stopped") {
			t.Errorf("%s lacks the run:\n%s", name, s)
		}
		if strings.Contains(s, testKey) {
			t.Errorf("%s shows the api key", name)
		}
		if !strings.Contains(s, "APIKey:[redacted]") {
			t.Errorf("%s lacks the (redacted) configuration", name)
		}
	}
}

// TestRunSignals: with a long grace period the second signal cancels the
// builds; a build that ignores cancellation is left by the third.
func TestRunSignals(t *testing.T) {
	e := newRunEnv(t, "shutdown_grace: 1h\n")
	e.add(t, "block")
	cmd := e.start(t)
	eventually(t, "a running build", func() bool { return e.metric(t, `vagent_slots{state="running"}`) == "1" })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	// The agent answered the signal (its "stopping" line) and still waits
	// for the build.
	eventually(t, "the stopping line", func() bool { return e.stderrCount("stopping: builds may finish") == 1 })
	if cmd.ProcessState != nil || len(e.srv.Logs()) != 0 || e.metric(t, `vagent_slots{state="running"}`) != "1" {
		t.Fatal("the first signal did not wait for the build")
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit %d after two signals", code)
	}
	if len(e.srv.Logs()) != 1 || len(e.srv.Queued("x86_64")) != 1 {
		t.Errorf("%d logs, %d queued; want 1 and 1", len(e.srv.Logs()), len(e.srv.Queued("x86_64")))
	}

	e.add(t, "stuck")
	cmd = e.start(t)
	eventually(t, "two running builds", func() bool { return e.metric(t, `vagent_slots{state="running"}`) == "2" })
	// Each signal once the agent answered the one before: three signals,
	// not one that the kernel merged with a pending one.
	for i, line := range []string{"stopping: builds may finish", "cancelling running builds; signal again", "exiting at once"} {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("signal %d: %v", i+1, err)
		}
		eventually(t, fmt.Sprintf("the answer to signal %d", i+1), func() bool { return e.stderrCount(line) == 1 })
	}
	if code := waitExit(t, cmd); code != 130 {
		t.Fatalf("exit %d after three signals, want 130", code)
	}
}

// TestRunLifecycleLines: at the default log level (INFO) `vagent run`
// says that it started, then — once the server answered — that it runs
// (with its configuration file, server, arch, slots, agent name, poll
// interval and metrics address), and for every job that it started,
// finished (with result and duration), uploaded its log and handed a job
// back; no DEBUG line.
func TestRunLifecycleLines(t *testing.T) {
	t.Setenv("VIETER_LOG_LEVEL", "")
	e := newRunEnv(t, "log_level: default\nshutdown_grace: 0s\nagent_name: build-07\n")
	e.add(t, "ok")
	cmd := e.start(t)
	eventually(t, "the log", func() bool { return len(e.srv.Logs()) == 1 })
	e.add(t, "block")
	eventually(t, "a running build", func() bool { return e.metric(t, `vagent_slots{state="running"}`) == "1" })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, _ := os.ReadFile(e.stderrPath)
	out := string(b)
	want := []string{
		`level=info msg="vagent started: polling the server" agent=build-07 server="http://127.0.0.1:\d+"`,
		`level=info msg="vagent running" agent=build-07 arch=x86_64 config=\S+agent.yaml data_dir=\S+ (id_range=[0-9]+-[0-9]+ )?metrics_address="` + e.metrics + `" poll_interval=1s server="http://\S+" slots=2 version=`,
		`level=info msg="build started" agent=build-07 base_image="archlinux:base-devel" repo=ok slot=\d source="https://example.org/ok.git" target=1`,
		`level=info msg="build finished" agent=build-07 duration=\S+ exit_code=0 reason=success repo=ok result=success slot=\d target=1`,
		`level=info msg="build log uploaded" agent=build-07 log_id=1 repo=ok slot=\d target=1`,
		`level=info msg="build finished" agent=build-07 duration=\S+ exit_code=1 reason="cancelled \(agent shutting down\); the job goes back to the server" repo=block result=cancelled slot=\d target=2`,
		`level=info msg="job handed back to the server" agent=build-07 repo=block slot=\d target=2`,
		`level=info msg="build log uploaded" agent=build-07 log_id=2 repo=block slot=\d target=2`,
	}
	last := 0
	for _, w := range want {
		loc := regexp.MustCompile(w).FindStringIndex(out[last:])
		if loc == nil {
			t.Errorf("no line %s after the previous one in:\n%s", w, out)
			continue
		}
		last += loc[1]
	}
	if strings.Contains(out, "level=debug") {
		t.Errorf("DEBUG lines at the default level:\n%s", out)
	}
	if strings.Index(out, "vagent running") < strings.Index(out, "vagent started") {
		t.Error("the start line came before the first poll")
	}
}

// TestRunWrongKey: an agent whose api_key the server rejects says so and
// never says it runs.
func TestRunWrongKey(t *testing.T) {
	e := newRunEnv(t, "")
	bad := filepath.Join(t.TempDir(), "bad-key")
	if err := os.WriteFile(bad, []byte("not-the-servers-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIETER_API_KEY_FILE", bad)
	cmd := e.start(t)
	// Said as an error, with the documented retry (docs/configuration.md).
	rejected := regexp.MustCompile(`level=error msg="the server rejected the api key: check api_key" .*retry_in=5m0s`)
	eventually(t, "the rejected key", func() bool {
		b, _ := os.ReadFile(e.stderrPath)
		return rejected.Match(b)
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, _ := os.ReadFile(e.stderrPath)
	if strings.Contains(string(b), "vagent running") || strings.Contains(string(b), "not-the-servers-key") {
		t.Errorf("a rejected key looks like a running agent, or shows:\n%s", b)
	}
}

func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(bad, []byte("address: http://x\napi_key: k\nmax_concurrent_builds: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI("run", bad)
	if code != exitConfig || !strings.Contains(errOut, "agent.yaml:3: max_concurrent_builds: must be ≥ 1") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	code, _, errOut = runCLI("run", bad, "extra")
	if code != 2 || !strings.Contains(errOut, "one configuration file") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("address: http://x\napi_key: k\ndata_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	saved := newExecutor // a binary without the build wiring
	newExecutor = nil
	defer func() { newExecutor = saved }()
	code, _, errOut = runCLI("run", good)
	if code != 1 || !strings.Contains(errOut, "no build executor") {
		t.Errorf("without an executor: exit %d: %s", code, errOut)
	}
}
