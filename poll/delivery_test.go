package poll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"
)

// TestFaultsNothingLost: 30% of requests fail (5xx, dropped connections,
// malformed JSON); 50 jobs on 3 slots each end with exactly one log.
func TestFaultsNothingLost(t *testing.T) {
	h := newHarness(t, vieterserver.WithFaults(vieterserver.FaultConfig{Rate: 0.3, Seed: 42}))
	var mu sync.Mutex
	runs := map[int]int{}
	exec := ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
		mu.Lock()
		runs[j.TargetID]++
		mu.Unlock()
		fmt.Fprintf(log, "log of target %d\n", j.TargetID)
		time.Sleep(time.Millisecond)
		return Outcome{ExitCode: j.TargetID % 3}, nil
	})
	ids := h.addJobs(t, 50, false)
	stop := start(t, h.agent(t, exec, WithSlots(3), WithPollInterval(20*time.Millisecond)))
	waitFor(t, 60*time.Second, "50 logs", func() bool { return len(h.srv.Logs()) >= 50 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	perTarget := map[int]int{}
	for _, l := range h.srv.Logs() {
		perTarget[l.TargetID]++
		if want := fmt.Sprintf("log of target %d\n\nvagent: ", l.TargetID); !strings.HasPrefix(logBody(t, l.Content), want) || strings.Count(logBody(t, l.Content), "vagent: ") != 1 || l.ExitCode != l.TargetID%3 || l.Arch != testArch {
			t.Errorf("log %d: exit %d %q", l.ID, l.ExitCode, l.Content)
		}
	}
	for _, id := range ids {
		if perTarget[id] != 1 || runs[id] != 1 {
			t.Errorf("target %d: %d logs, %d runs, want 1 each", id, perTarget[id], runs[id])
		}
	}
	if q := h.srv.Queued(testArch); len(q) != 0 {
		t.Errorf("jobs left on the server: %v", q)
	}
	if f := spoolFiles(t, h.dir, "pending/*"); len(f) != 0 {
		t.Errorf("spool not empty: %v", f)
	}
	faults := h.srv.Faults()
	if faults[vieterserver.Fault5xx] == 0 || faults[vieterserver.FaultDrop] == 0 || faults[vieterserver.FaultMalformedJSON] == 0 {
		t.Errorf("not every kind of fault happened: %v", faults)
	}
	t.Logf("faults injected: %v; uploads tried %d", faults, h.srv.Requests(vieterserver.RouteLogUpload))
	if strings.Contains(h.logBuf.String(), testKey) {
		t.Error("the api key appears in the log")
	}
}

// blocking runs until its context is done, and reports when it started.
type blocking struct {
	started chan int
}

func (b *blocking) Execute(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
	fmt.Fprintf(log, "building target %d\n", j.TargetID)
	b.started <- j.TargetID
	<-ctx.Done()
	return Outcome{ExitCode: 2}, nil
}

func TestShutdownRequeuesAndUploads(t *testing.T) {
	h := newHarness(t)
	exec := &blocking{started: make(chan int, 10)}
	forced := h.addJobs(t, 1, true)
	h.addJobs(t, 4, false)
	stop := start(t, h.agent(t, exec, WithSlots(3), WithGracePeriod(100*time.Millisecond)))
	running := map[int]bool{}
	for range 3 {
		running[<-exec.started] = true
	}
	if !running[forced[0]] {
		t.Fatalf("the forced job is not among the running ones: %v", running)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after shutdown: %v", err)
	}
	logs := h.srv.Logs()
	if len(logs) != 3 {
		t.Fatalf("%d logs, want 3", len(logs))
	}
	for _, l := range logs {
		if !running[l.TargetID] || l.ExitCode != 2 || !strings.Contains(string(l.Content), "handed back to the server") {
			t.Errorf("log of target %d: exit %d %q", l.TargetID, l.ExitCode, l.Content)
		}
	}
	q := h.srv.Queued(testArch)
	if len(q) != 5 {
		t.Fatalf("queue %v, want the 2 untouched jobs and the 3 requeued ones", q)
	}
	for _, j := range q[2:] {
		if !running[j.TargetID] || j.Force != (j.TargetID == forced[0]) {
			t.Errorf("requeued %+v: force must be kept", j)
		}
	}
	if f := spoolFiles(t, h.dir, "pending/*"); len(f) != 0 {
		t.Errorf("spool not empty: %v", f)
	}
}

func TestShutdownLetsBuildsFinishWithinGrace(t *testing.T) {
	h := newHarness(t)
	h.addJobs(t, 2, false)
	started := make(chan struct{}, 2)
	exec := ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
		started <- struct{}{}
		select {
		case <-time.After(300 * time.Millisecond):
			return Outcome{}, nil
		case <-ctx.Done():
			return Outcome{ExitCode: 1}, nil
		}
	})
	stop := start(t, h.agent(t, exec, WithSlots(2), WithGracePeriod(10*time.Second)))
	<-started
	<-started
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, l := range h.srv.Logs() {
		if l.ExitCode != 0 {
			t.Errorf("target %d: exit %d, want the build to finish in the grace period", l.TargetID, l.ExitCode)
		}
	}
	if len(h.srv.Logs()) != 2 || len(h.srv.Queued(testArch)) != 0 {
		t.Errorf("%d logs, queue %v", len(h.srv.Logs()), h.srv.Queued(testArch))
	}
}

func TestAbortCancelsAtOnce(t *testing.T) {
	h := newHarness(t)
	h.addJobs(t, 1, false)
	exec := &blocking{started: make(chan int, 1)}
	a := h.agent(t, exec, WithGracePeriod(time.Hour))
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error)
	go func() { errc <- a.Run(ctx) }()
	<-exec.started
	cancel() // first signal: graceful, an hour of grace
	waitFor(t, 5*time.Second, "the shutdown to begin", func() bool { return a.Status().Stopping })
	t0 := time.Now()
	a.Abort() // second signal
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("abort took %v", d)
	}
	if len(h.srv.Logs()) != 1 || len(h.srv.Queued(testArch)) != 1 {
		t.Errorf("%d logs, %d queued, want 1 and 1", len(h.srv.Logs()), len(h.srv.Queued(testArch)))
	}
}

// TestPendingLogsSurviveRestart: logs that could not be delivered stay in
// the spool and are delivered by the next run.
func TestPendingLogsSurviveRestart(t *testing.T) {
	h := newHarness(t, vieterserver.WithFaults(vieterserver.FaultConfig{Rate: 1, Kinds: []vieterserver.Fault{vieterserver.Fault5xx},
		Routes: []string{vieterserver.RouteLogUpload}}))
	h.addJobs(t, 4, false)
	stop := start(t, h.agent(t, instant, WithDeliverTimeout(100*time.Millisecond)))
	waitFor(t, 10*time.Second, "4 builds", func() bool {
		return len(spoolFiles(t, h.dir, "pending/*.log")) == 4 && len(h.srv.Queued(testArch)) == 0
	})
	waitFor(t, 10*time.Second, "upload attempts", func() bool { return h.srv.Requests(vieterserver.RouteLogUpload) >= 8 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(spoolFiles(t, h.dir, "pending/*")); n != 4 {
		t.Fatalf("%d spool files after stop, want 4 logs", n)
	}
	// The same data dir, a server that accepts.
	h2 := newHarness(t)
	h2.dir = h.dir
	h2.addJobs(t, 4, false) // same target ids 1..4, nothing queued once polled
	for range 4 {
		h2.srv.Queued(testArch)
	}
	h2srvDrain(t, h2)
	start(t, h2.agent(t, instant))
	waitFor(t, 10*time.Second, "4 delivered logs", func() bool { return len(h2.srv.Logs()) == 4 })
	waitFor(t, 5*time.Second, "empty spool", func() bool { return len(spoolFiles(t, h.dir, "pending/*")) == 0 })
	for _, l := range h2.srv.Logs() {
		if !strings.HasPrefix(logBody(t, l.Content), fmt.Sprintf("building target %d\n\nvagent: success; exit code 0; took ", l.TargetID)) {
			t.Errorf("log %q", l.Content)
		}
	}
}

// h2srvDrain pops the queue so that only spooled logs reach the server.
func h2srvDrain(t *testing.T, h *harness) {
	t.Helper()
	if _, err := h.client.Poll(t.Context(), testArch, 100); err != nil {
		t.Fatal(err)
	}
}

func TestRejectedLogIsKeptAside(t *testing.T) {
	h := newHarness(t)
	sp, err := openSpool(h.dir, testArch, true)
	if err != nil {
		t.Fatal(err)
	}
	e := &spoolEntry{ID: "x", Job: Job{TargetID: 99, Repo: "bur"}, Arch: testArch, Start: 1, End: 2}
	f, err := sp.create(e)
	if err != nil {
		t.Fatal(err)
	}
	e.State, e.Size = stateFinished, 0
	if err := errors.Join(sp.update(f, e), f.Close()); err != nil {
		t.Fatal(err)
	}
	start(t, h.agent(t, instant))
	waitFor(t, 5*time.Second, "rejection", func() bool { return len(spoolFiles(t, h.dir, "rejected/*")) == 1 })
	if n := h.srv.Requests(vieterserver.RouteLogUpload); n != 1 {
		t.Errorf("%d upload attempts for a log the server refuses (400), want 1", n)
	}
}

// TestCrashMidUpload kills an agent process with SIGKILL while the server
// holds its upload; the next run uploads the log.
func TestCrashMidUpload(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var hold sync.Once
	h := newHarness(t, vieterserver.WithHook(func(route string, r *http.Request) {
		if route == vieterserver.RouteLogUpload {
			held := false
			hold.Do(func() { held = true })
			if held {
				entered <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
		}
	}))
	h.addJobs(t, 1, false)
	child := startChild(t, "instant", h.ts.URL, h.dir, 50*time.Millisecond)
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the child never uploaded")
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	close(release)
	// The held request ends now. If its body had reached the server before
	// the kill, the server stores that log although the agent never heard
	// back: delivery is at least once, so the next run uploads it again.
	waitFor(t, 5*time.Second, "the held upload to end", func() bool {
		n := 0
		for _, c := range h.srv.Statuses(vieterserver.RouteLogUpload) {
			n += c
		}
		return n >= 1
	})
	before := len(h.srv.Logs())
	if n := len(spoolFiles(t, h.dir, "pending/*.log")); n != 1 {
		t.Fatalf("%d pending entries after the crash, want 1", n)
	}
	start(t, h.agent(t, instant))
	waitFor(t, 10*time.Second, "the log after restart", func() bool { return len(h.srv.Logs()) == before+1 })
	for _, l := range h.srv.Logs() {
		if l.ExitCode != 0 || !strings.HasPrefix(logBody(t, l.Content), "building target 1\n\nvagent: success; exit code 0; took ") {
			t.Errorf("log: exit %d %q", l.ExitCode, l.Content)
		}
	}
	waitFor(t, 5*time.Second, "empty spool", func() bool { return len(spoolFiles(t, h.dir, "pending/*")) == 0 })
}

// TestCrashMidBuild kills an agent process during a build; the next run
// uploads the partial log as interrupted and hands the job back, and then
// builds it.
func TestCrashMidBuild(t *testing.T) {
	h := newHarness(t)
	h.addJobs(t, 1, true)
	child := startChild(t, "block", h.ts.URL, h.dir, 50*time.Millisecond)
	waitFor(t, 20*time.Second, "the build to start", func() bool {
		for _, p := range spoolFiles(t, h.dir, "pending/*.log") {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "started target") {
				return true
			}
		}
		return false
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	files := spoolFiles(t, h.dir, "pending/*.log")
	if len(files) != 1 {
		t.Fatalf("spool %v", files)
	}
	if e, err := readEntry(files[0]); err != nil || e.State != stateRunning || e.Job.TargetID != 1 || !e.Job.Force {
		t.Fatalf("spool entry %+v: %v", e, err)
	}
	start(t, h.agent(t, instant))
	waitFor(t, 10*time.Second, "two logs", func() bool { return len(h.srv.Logs()) == 2 })
	// The two uploads race: the recovered log goes up after the requeue,
	// and the requeued job may be polled, built and logged first. Tell
	// them apart by exit code, not by arrival order.
	var interrupted, rebuilt []vieterserver.Log
	for _, l := range h.srv.Logs() {
		if l.ExitCode == ExitInterrupted {
			interrupted = append(interrupted, l)
		} else {
			rebuilt = append(rebuilt, l)
		}
	}
	// The note says what happened, in order: the stop, then the requeue.
	const want = "started target 1\n\nvagent: the agent stopped during this build; the job goes back to the server\nvagent: the job was handed back to the server\n"
	if len(interrupted) != 1 || logBody(t, interrupted[0].Content) != want {
		t.Errorf("interrupted logs %+v, want one with %q", interrupted, want)
	} else if f, _, _ := splitHeader(interrupted[0].Content); f["agent"] != "child" || f["builder digest"] != "sha256:crash" {
		// What the build reported before the crash is in its header.
		t.Errorf("interrupted log's header %v, want agent child and the reported builder digest", f)
	}
	if len(rebuilt) != 1 || rebuilt[0].ExitCode != 0 || rebuilt[0].TargetID != 1 {
		t.Errorf("rebuild logs: %+v", rebuilt)
	}
	if rq := h.srv.Requests(vieterserver.RouteQueue); rq != 1 {
		t.Errorf("%d requeues, want 1", rq)
	}
}

// TestSigtermChild: SIGTERM to an agent process during builds requeues the
// jobs, uploads their logs and exits 0.
func TestSigtermChild(t *testing.T) {
	h := newHarness(t)
	ids := h.addJobs(t, 3, false)
	t.Setenv(childGraceEnv, "0s")
	child := startChild(t, "block", h.ts.URL, h.dir, 50*time.Millisecond)
	waitFor(t, 20*time.Second, "three builds", func() bool {
		return len(h.srv.Queued(testArch)) == 0 && len(spoolFiles(t, h.dir, "pending/*.log")) == 3
	})
	// The child's grace period is 0: one SIGTERM stops polling and
	// cancels the builds.
	if err := child.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(); err != nil {
		t.Fatalf("agent exit: %v", err)
	}
	// Against Vieter's terse answers: three logs, each job queued once.
	if len(h.srv.Logs()) != 3 || h.srv.Requests(vieterserver.RouteQueue) != 3 {
		t.Errorf("%d logs, %d requeue requests, want 3 and 3", len(h.srv.Logs()), h.srv.Requests(vieterserver.RouteQueue))
	}
	q := map[int]int{}
	for _, j := range h.srv.Queued(testArch) {
		q[j.TargetID]++
	}
	for _, id := range ids {
		if q[id] != 1 {
			t.Errorf("target %d queued %d times, want 1", id, q[id])
		}
	}
}
