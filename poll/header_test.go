package poll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"
)

// TestLogHeader: every uploaded log starts with the header — agent name
// and version, host, slot, start, target, repository, arch, the source
// (without credentials), the base image, and the digests the executor
// reported — then what the build wrote.
func TestLogHeader(t *testing.T) {
	h := newHarness(t)
	id := h.srv.AddTarget(vieterserver.Target{Kind: "git", URL: "https://user:tok3n@example.org/pkg.git", Branch: "main", Path: "sub",
		Repo: "extra", BaseImage: "registry.local/arch:base"})
	if err := h.srv.Enqueue(id, testArch, false); err != nil {
		t.Fatal(err)
	}
	exec := ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
		fmt.Fprintln(log, "setup output")
		ReportHeader(ctx, "base image digest", "sha256:"+strings.Repeat("a", 64))
		ReportHeader(ctx, "builder digest", "sha256:"+strings.Repeat("b", 64))
		fmt.Fprintln(log, "build output")
		return Outcome{}, nil
	})
	before := time.Now().Truncate(time.Second)
	start(t, h.agent(t, exec, WithAgentName("build-01"), WithVersion("1.2.3"), WithSlots(1)))
	waitFor(t, 10*time.Second, "the log", func() bool { return len(h.srv.Logs()) == 1 })
	l := h.srv.Logs()[0]
	fields, body, ok := splitHeader(l.Content)
	if !ok {
		t.Fatalf("no header: %q", l.Content)
	}
	want := map[string]string{
		"agent": "build-01", "version": "1.2.3", "host": hostname(), "slot": "0", "target": fmt.Sprint(id),
		"repository": "extra", "arch": testArch, "source": "git https://redacted@example.org/pkg.git", "branch": "main",
		"path": "sub", "base image": "registry.local/arch:base", "base image digest": "sha256:" + strings.Repeat("a", 64),
		"builder digest": "sha256:" + strings.Repeat("b", 64),
	}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("header %s = %q, want %q", k, fields[k], v)
		}
	}
	started, err := time.Parse(time.RFC3339, fields["started"])
	if err != nil || started.Before(before) || started.After(time.Now()) || !started.Equal(l.StartTime) {
		t.Errorf("header started %q (%v), want the build's start %v", fields["started"], err, l.StartTime)
	}
	if len(fields) != len(want)+1 {
		t.Errorf("header has %d fields, want %d: %v", len(fields), len(want)+1, fields)
	}
	if !strings.HasPrefix(body, "setup output\nbuild output\n\nvagent: success; exit code 0; took ") {
		t.Errorf("body %q", body)
	}
	if strings.Contains(string(l.Content), "tok3n") {
		t.Error("the source's credentials are in the log")
	}
}

// TestReportHeaderBounds: what an executor reports is bounded — a key
// that is not lower-case words is dropped, a value is made one line and
// cut, at most MaxHeaderFields keys are kept, a key set again is replaced
// — and the worst case fits the spool entry sized at the job's start.
func TestReportHeaderBounds(t *testing.T) {
	h := newHarness(t)
	h.addJobs(t, 1, false)
	exec := ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
		ReportHeader(ctx, "Bad-Key", "x")
		ReportHeader(ctx, "two\nlines", "x")
		ReportHeader(ctx, "multi", "a\nb\x1b[31m")
		ReportHeader(ctx, "long", strings.Repeat("<é", MaxHeaderValueBytes))
		ReportHeader(ctx, "multi", "replaced\n")
		for i := range 2 * MaxHeaderFields {
			ReportHeader(ctx, "field "+string(rune('a'+i)), strings.Repeat("<", 10*MaxHeaderValueBytes))
		}
		return Outcome{}, nil
	})
	start(t, h.agent(t, exec))
	waitFor(t, 10*time.Second, "the log", func() bool { return len(h.srv.Logs()) == 1 })
	fields, _, ok := splitHeader(h.srv.Logs()[0].Content)
	if !ok {
		t.Fatalf("no header: %q", h.srv.Logs()[0].Content)
	}
	if fields["multi"] != "replaced?" {
		t.Errorf("multi = %q", fields["multi"])
	}
	if v := fields["long"]; len(v) > MaxHeaderValueBytes || !strings.HasPrefix(v, "<é<é") || !strings.HasSuffix(v, "é") && !strings.HasSuffix(v, "<") {
		t.Errorf("long = %q (%d bytes)", v, len(v))
	}
	n := 0
	for k := range fields {
		if strings.HasPrefix(k, "field ") {
			n++
		}
		if k == "Bad-Key" || strings.Contains(k, "two") {
			t.Errorf("a bad key was kept: %q", k)
		}
	}
	if n != MaxHeaderFields-2 {
		t.Errorf("%d more fields kept, want %d", n, MaxHeaderFields-2)
	}
	if strings.Contains(h.logBuf.String(), "overflow") {
		t.Errorf("the spool entry was too small for the fields:\n%s", h.logBuf.String())
	}
}

// gatedExec writes a line, reports a phase and waits for the test to let
// it go on; then it reports another phase, writes more and succeeds.
type gatedExec struct {
	started chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func newGatedExec() *gatedExec {
	return &gatedExec{started: make(chan struct{}), gate: make(chan struct{})}
}

func (g *gatedExec) Execute(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
	ReportPhase(ctx, PhasePulling)
	fmt.Fprintf(log, "first line of target %d\n", j.TargetID)
	g.once.Do(func() { close(g.started) })
	select {
	case <-g.gate:
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	}
	ReportPhase(ctx, PhaseBuilding)
	fmt.Fprintf(log, "last line of target %d\n", j.TargetID)
	return Outcome{}, nil
}

// TestStatusPhases: /status has the phase of a running build and the log
// it writes; with every slot busy the agent says it does not poll; a log
// on its way to the server is listed with its phase.
func TestStatusPhases(t *testing.T) {
	h := newHarness(t, vieterserver.WithFaults(vieterserver.FaultConfig{Rate: 1, Kinds: []vieterserver.Fault{vieterserver.Fault5xx},
		Routes: []string{vieterserver.RouteLogUpload}}))
	ids := h.addJobs(t, 1, false)
	g := newGatedExec()
	a := h.agent(t, g, WithSlots(1), WithAgentName("a1"))
	start(t, a)
	<-g.started
	st := a.Status()
	if s := st.Slots[0]; s.State != "running" || s.Phase != PhasePulling || s.Job == nil || s.Job.TargetID != ids[0] || !strings.Contains(s.Log, fmt.Sprintf("-t%d-", ids[0])) {
		t.Errorf("slot %+v, want target %d pulling", s, ids[0])
	}
	if st.Polling || st.Agent != "a1" {
		t.Errorf("status %+v: want not polling (every slot busy), agent a1", st)
	}
	close(g.gate)
	waitFor(t, 10*time.Second, "the log's upload", func() bool {
		st := a.Status()
		return len(st.Uploads) == 1 && st.Uploads[0].Phase == PhaseUploading && st.Uploads[0].Job.TargetID == ids[0] && st.Polling
	})
}

// TestFollowLog: FollowLog shows a running build's lines before it ends,
// with the header first, and follows it to its footer; without follow it
// stops at what was written; an unknown slot or target has no log.
func TestFollowLog(t *testing.T) {
	h := newHarness(t)
	ids := h.addJobs(t, 1, false)
	g := newGatedExec()
	a := h.agent(t, g, WithSlots(1))
	start(t, a)
	<-g.started

	var now bytes.Buffer
	if err := FollowLog(t.Context(), h.dir, LogSelector{Slot: 0}, false, &now); err != nil {
		t.Fatal(err)
	}
	if f, body, ok := splitHeader(now.Bytes()); !ok || f["target"] != fmt.Sprint(ids[0]) || body != fmt.Sprintf("first line of target %d\n", ids[0]) {
		t.Errorf("log so far: %q", now.String())
	}

	var followed syncBuffer
	done := make(chan error, 1)
	go func() { done <- FollowLog(t.Context(), h.dir, LogSelector{Slot: -1, Target: ids[0]}, true, &followed) }()
	waitFor(t, 10*time.Second, "the first line, followed", func() bool {
		return strings.Contains(followed.String(), "first line of target")
	})
	select {
	case err := <-done:
		t.Fatalf("FollowLog returned before the build ended: %v", err)
	default:
	}
	close(g.gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("FollowLog did not end with the build")
	}
	_, body, _ := splitHeader([]byte(followed.String()))
	if !strings.HasPrefix(body, fmt.Sprintf("first line of target %d\nlast line of target %d\n\nvagent: success; exit code 0; took ", ids[0], ids[0])) {
		t.Errorf("followed log %q", followed.String())
	}

	for _, sel := range []LogSelector{{Slot: 5}, {Slot: -1, Target: 999}} {
		if err := FollowLog(t.Context(), h.dir, sel, true, io.Discard); !errors.Is(err, ErrNoLog) {
			t.Errorf("%v: %v, want ErrNoLog", sel, err)
		}
	}
	if err := FollowLog(t.Context(), t.TempDir(), LogSelector{Slot: 0}, false, io.Discard); !errors.Is(err, ErrNoLog) {
		t.Errorf("empty data dir: %v, want ErrNoLog", err)
	}
}
