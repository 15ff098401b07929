package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/metrics"
	"github.com/vieter-v/vagent/poll"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agentStatus reads a running agent's /status; nothing while it does not
// answer. It may be called from any goroutine.
func agentStatus(t *testing.T, addr string) poll.Status {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return poll.Status{}
	}
	defer resp.Body.Close()
	var body metrics.StatusJSON
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Errorf("/status: %v", err)
		return poll.Status{}
	}
	st, err := body.Decode()
	if err != nil {
		t.Errorf("/status: %v", err)
	}
	return st
}

// TestLogsFollow: a running agent's /status has the phase of a running
// build; `vagent logs` shows its log so far (header first) from the
// agent's endpoint and from the data dir, and `vagent logs -f` shows its
// lines before it ends and follows it to its footer.
func TestLogsFollow(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "gate")
	e := newRunEnv(t, "agent_name: follow-me\n")
	e.env = []string{gateEnv + "=" + gate}
	id := e.add(t, "gate")
	e.start(t)
	eventually(t, "the build in its building phase", func() bool {
		for _, s := range agentStatus(t, e.metrics).Slots {
			if s.Job != nil && s.Job.TargetID == id && s.Phase == poll.PhaseBuilding {
				return true
			}
		}
		return false
	})
	header := regexp.MustCompile(`(?s)^vagent: agent: follow-me\n.*vagent: target: 1\n.*vagent: builder digest: sha256:test\n\n` +
		`test build of target 1 \(gate\)\nwaiting at the gate\n`)
	for _, args := range [][]string{{"logs", "--address", e.metrics, "0"}, {"logs", "--data-dir", e.dir, "--target", "1"}} {
		code, out, errOut := runCLI(args...)
		if code != 0 || !header.MatchString(out) || strings.Contains(out, "through the gate") {
			t.Errorf("%v: exit %d %s\n%s", args, code, errOut, out)
		}
	}

	var out lockedBuffer
	done := make(chan int, 1)
	go func() { done <- run1([]string{"logs", "-f", "--address", e.metrics, "0"}, &out, &out) }()
	eventually(t, "the followed line", func() bool { return strings.Contains(out.String(), "waiting at the gate") })
	select {
	case code := <-done:
		t.Fatalf("vagent logs -f ended (exit %d) before the build:\n%s", code, out.String())
	default:
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("vagent logs -f did not end with the build")
	}
	if s := out.String(); !header.MatchString(s) || !regexp.MustCompile(`through the gate\n\nvagent: success; exit code 0; took \S+\n$`).MatchString(s) {
		t.Errorf("followed log:\n%s", s)
	}
	if code, _, errOut := runCLI("logs", "--address", e.metrics, "5"); code != 1 ||
		!strings.Contains(errOut, "404 Not Found: slot 5: no such log in the spool (an uploaded log is on the server)") {
		t.Errorf("an unknown slot: exit %d: %s", code, errOut)
	}
}

func TestLogsErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "logs", "pending"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"logs"}, 2, "logs takes a SLOT (a number, as vagent status shows it) or --target ID"},
		{[]string{"logs", "x", "--data-dir", dir}, 2, `SLOT "x": want a slot number`},
		{[]string{"logs", "0", "--target", "3"}, 2, "use SLOT or --target, not both"},
		{[]string{"logs", "0", "1"}, 2, "logs takes one SLOT"},
		{[]string{"logs", "0", "--address", "a:1", "--data-dir", dir}, 2, "use one of --address, --data-dir and --config"},
		{[]string{"logs", "0", "--data-dir", dir}, 1, "slot 0: no such log in the spool in " + dir + " (not started, or uploaded: the server has it)"},
		{[]string{"logs", "--target", "7", "--data-dir", filepath.Join(dir, "none")}, 1, "no such data dir"},
		{[]string{"logs", "0", "--address", "127.0.0.1:1"}, 1, "is metrics_address set and the agent running?"},
	}
	for _, tt := range tests {
		code, _, errOut := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
}
