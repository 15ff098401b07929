package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/metrics"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/vieter"
)

// statusAgent runs an agent with two slots: target 1 fails at once, target
// 2 builds until the test ends; against a test server whose log uploads fail (so logs stay
// pending), and serves its metrics.
func statusAgent(t *testing.T) (dir, metricsAddr string, srv *vieterserver.Server) {
	t.Helper()
	srv, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey(testKey), vieterserver.WithFaults(vieterserver.FaultConfig{
		Rate: 1, Kinds: []vieterserver.Fault{vieterserver.Fault5xx}, Routes: []string{vieterserver.RouteLogUpload}}))
	for i, repo := range []string{"bur", "core\x1b[31m"} { // the second repo carries a terminal escape
		id := srv.AddTarget(vieterserver.Target{Kind: "git", URL: fmt.Sprintf("https://example.org/p%d.git", i), Repo: repo})
		if err := srv.Enqueue(id, "x86_64", false); err != nil {
			t.Fatal(err)
		}
	}
	c, err := vieter.NewClient(ts.URL, testKey, vieter.WithHTTPClient(ts.Client()))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	exec := poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) {
		fmt.Fprintf(log, "building %d\n", j.TargetID)
		if j.TargetID == 1 {
			return poll.Outcome{ExitCode: 4}, nil // finishes; its log stays pending
		}
		poll.ReportPhase(ctx, poll.PhaseBuilding)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return poll.Outcome{}, nil
	})
	dir = t.TempDir()
	m := metrics.New()
	a, err := poll.New(c, exec, poll.WithArch("x86_64"), poll.WithDataDir(dir), poll.WithSlots(2),
		poll.WithPollInterval(50*time.Millisecond), poll.WithBackoff(5*time.Millisecond, 20*time.Millisecond),
		poll.WithGracePeriod(0), poll.WithDeliverTimeout(100*time.Millisecond), poll.WithObserver(m), poll.WithAgentName("build-01"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := metrics.Handler(m, a)
	if err != nil {
		t.Fatal(err)
	}
	ms := httptest.NewServer(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		close(release)
		cancel()
		<-done
		ms.Close()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := a.Status()
		if st.PendingLogs == 1 && (st.Slots[0].State == "running" || st.Slots[1].State == "running") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never got busy: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return dir, strings.TrimPrefix(ms.URL, "http://"), srv
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run1(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestStatus(t *testing.T) {
	dir, addr, _ := statusAgent(t)

	// From the agent's /status.
	code, out, errOut := runCLI("status", "-address", addr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{`(?m)^agent build-01: running, arch x86_64, up `, `(?m)^last poll \d+s ago$`,
		`(?m)^SLOT +STATE +PHASE +TARGET +REPO +SOURCE +FOR$`,
		`(?m)^\d +running +building +2 +core\?\[31m +https://example.org/p1.git +\d+s$`, `(?m)^\d +empty +- +- +- +- +-$`,
		`(?m)^finished builds on their way to the server:\n`, `(?m)^\d +uploading log +1 +bur +\d+s$`,
		`(?m)^logs pending upload: 1$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Error("a terminal escape from the server reached the output")
	}
	code, out, _ = runCLI("status", "-address", "http://"+addr+"/", "-json")
	var body metrics.StatusJSON
	err := json.Unmarshal([]byte(out), &body)
	st, derr := body.Decode()
	if code != 0 || err != nil || derr != nil || len(st.Slots) != 2 || st.PollInterval != 50*time.Millisecond || st.Agent != "build-01" || !st.Polling {
		t.Errorf("-json: exit %d, %v, %v: %s", code, err, derr, out)
	}
	// The running build's phase, the pending log's delivery.
	phases := map[int]poll.Phase{}
	for _, sl := range st.Slots {
		if sl.Job != nil {
			phases[sl.Job.TargetID] = sl.Phase
			if !strings.Contains(sl.Log, "-t2-") {
				t.Errorf("slot %d: log id %q does not name target 2", sl.Slot, sl.Log)
			}
		}
	}
	if len(phases) != 1 || phases[2] != poll.PhaseBuilding {
		t.Errorf("-json: phases %v, want target 2 building", phases)
	}
	if len(st.Uploads) != 1 || st.Uploads[0].Job.TargetID != 1 || st.Uploads[0].Phase != poll.PhaseUploading {
		t.Errorf("-json: uploads %+v, want target 1's log uploading", st.Uploads)
	}
	if !strings.Contains(out, `"poll_interval": "50ms"`) {
		t.Errorf("-json: durations are not strings:\n%s", out)
	}

	// From the data dir's spool: the running build and the pending log.
	code, out, errOut = runCLI("status", "-data-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{`data dir .*: 2 log\(s\) in the spool`, `(?m)^\d +1 +bur +finished, failure +4 +\d+ +`,
		`(?m)^\d +2 +core\?\[31m +building \(or interrupted\) +- +`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}

	// From a configuration file: its metrics_address.
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("address: http://x\napi_key: k\nmetrics_address: "+addr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI("status", "-config", cfg); code != 0 || !strings.Contains(out, "logs pending upload: 1") {
		t.Errorf("-config: exit %d: %s%s", code, out, errOut)
	}
}

// TestStatusNotPolling: with every slot busy `vagent status` says the
// agent does not poll, and why, rather than how long ago it last polled.
func TestStatusNotPolling(t *testing.T) {
	now := time.Now()
	job := &poll.Job{TargetID: 7, Repo: "extra", URL: "https://example.org/x.git"}
	st := &poll.Status{Agent: "a1", Arch: "x86_64", Started: now.Add(-time.Hour), LastPoll: now.Add(-54 * time.Second),
		LastPollOK: now.Add(-54 * time.Second), Slots: []poll.SlotStatus{
			{Slot: 0, State: "running", Job: job, Since: now.Add(-time.Minute), Phase: poll.PhasePreparing}}}
	var b bytes.Buffer
	printAgentStatus(&b, st, now)
	for _, want := range []string{`(?m)^not polling: all slots busy \(last poll 54s ago\)$`, `(?m)^0 +running +preparing builder +7 +extra `} {
		if !regexp.MustCompile(want).MatchString(b.String()) {
			t.Errorf("output lacks %s:\n%s", want, b.String())
		}
	}
	st.Stopping = true
	b.Reset()
	printAgentStatus(&b, st, now)
	if !strings.Contains(b.String(), "not polling: stopping") {
		t.Errorf("stopping:\n%s", b.String())
	}
}

func TestStatusErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status", "-address", "a:1", "-data-dir", "/x"}, 2, "use one of --address, --data-dir and --config"},
		{[]string{"status", "extra"}, 2, "status takes no arguments"},
		{[]string{"status", "-data-dir", filepath.Join(t.TempDir(), "none")}, 1, "no such data dir"},
		{[]string{"status", "-address", "127.0.0.1:1"}, 1, "is metrics_address set and the agent running?"},
		{[]string{"status", "-config", filepath.Join(t.TempDir(), "none.yaml")}, exitConfig, "reading configuration"},
	}
	for _, tt := range tests {
		code, _, errOut := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
}
