package poll

import (
	"strings"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"
)

// drain starts an agent with 3 slots on 3 jobs that block, waits for all
// of them to run, stops it (as SIGTERM does) and returns the targets.
func drain(t *testing.T, h *harness) map[int]bool {
	t.Helper()
	exec := &blocking{started: make(chan int, 10)}
	h.addJobs(t, 3, false)
	stop := start(t, h.agent(t, exec, WithSlots(3), WithGracePeriod(50*time.Millisecond), WithDeliverTimeout(20*time.Second)))
	running := map[int]bool{}
	for range 3 {
		running[<-exec.started] = true
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after shutdown: %v", err)
	}
	if f := spoolFiles(t, h.dir, "pending/*"); len(f) != 0 {
		t.Errorf("spool not empty: %v", f)
	}
	return running
}

// queuedPerTarget counts the queued jobs of each target.
func queuedPerTarget(h *harness) map[int]int {
	n := map[int]int{}
	for _, j := range h.srv.Queued(testArch) {
		n[j.TargetID]++
	}
	return n
}

// TestDrainLeavesEachJobQueuedOnce: against Vieter's terse answers (the
// requeue's success is an empty body), a drained agent uploads the three
// logs and leaves exactly the three jobs queued, one request each.
func TestDrainLeavesEachJobQueuedOnce(t *testing.T) {
	h := newHarness(t)
	running := drain(t, h)
	if n := h.srv.Requests(vieterserver.RouteQueue); n != 3 {
		t.Errorf("%d requeue requests, want 3", n)
	}
	q := queuedPerTarget(h)
	for id := range running {
		if q[id] != 1 {
			t.Errorf("target %d queued %d times, want 1", id, q[id])
		}
	}
	logs := h.srv.Logs()
	if len(logs) != 3 {
		t.Fatalf("%d logs, want 3", len(logs))
	}
	for _, l := range logs {
		if !running[l.TargetID] || !strings.HasSuffix(string(l.Content), "vagent: the job was handed back to the server\n") {
			t.Errorf("log of target %d: %q", l.TargetID, l.Content)
		}
	}
}

// TestDrainWithLostRequeueAnswers: every requeue is carried out by the
// server but its answer is lost (headers then nothing, or no byte at all).
// Each job is sent at most twice — one extra copy, as documented — and the
// logs, uploaded all the same, say so.
func TestDrainWithLostRequeueAnswers(t *testing.T) {
	h := newHarness(t, vieterserver.WithFaults(vieterserver.FaultConfig{Rate: 1, Seed: 5,
		Kinds: []vieterserver.Fault{vieterserver.FaultDropAfter}, Routes: []string{vieterserver.RouteQueue}}))
	running := drain(t, h)
	q := queuedPerTarget(h)
	for id := range running {
		if q[id] < 1 || q[id] > maxRequeueSends {
			t.Errorf("target %d queued %d times, want 1..%d", id, q[id], maxRequeueSends)
		}
	}
	if n := h.srv.Requests(vieterserver.RouteQueue); n > 3*maxRequeueSends {
		t.Errorf("%d requeue requests, want at most %d", n, 3*maxRequeueSends)
	}
	logs := h.srv.Logs()
	if len(logs) != 3 {
		t.Fatalf("%d logs, want 3: the log is uploaded whatever happens to the requeue", len(logs))
	}
	for _, l := range logs {
		c := string(l.Content)
		lost := strings.Contains(c, "the server's answer was lost 2 times") && strings.Contains(c, "is not sent again")
		ok := strings.HasSuffix(c, "vagent: the job was handed back to the server\n") // a cut empty body is Vieter's success
		if !lost && !ok {
			t.Errorf("log of target %d does not say what happened to the requeue: %q", l.TargetID, c)
		}
	}
	if h.srv.Faults()[vieterserver.FaultDropAfter] == 0 {
		t.Error("no fault injected")
	}
}

// TestRequeueNotSentAgainAfterCrash: an agent that died while a requeue
// request was on its way (the entry records it as possibly delivered) does
// not send it again at the next start; the log is uploaded with a note.
func TestRequeueNotSentAgainAfterCrash(t *testing.T) {
	h := newHarness(t)
	ids := h.addJobs(t, 1, false)
	h2srvDrain(t, h)
	sp, err := openSpool(h.dir, testArch, false)
	if err != nil {
		t.Fatal(err)
	}
	e := newEntry(t, sp, Job{TargetID: ids[0]}, "building\n", true)
	e.Requeue, e.RequeueSent = true, 1
	if err := sp.save(e); err != nil {
		t.Fatal(err)
	}
	stop1 := start(t, h.agent(t, instant))
	waitFor(t, 10*time.Second, "the log", func() bool { return len(h.srv.Logs()) == 1 })
	waitFor(t, 5*time.Second, "empty spool", func() bool { return len(spoolFiles(t, h.dir, "pending/*")) == 0 })
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	if n := h.srv.Requests(vieterserver.RouteQueue); n != 0 {
		t.Errorf("%d requeue requests after the restart, want 0", n)
	}
	if q := h.srv.Queued(testArch); len(q) != 0 {
		t.Errorf("queued %v", q)
	}
	if c := string(h.srv.Logs()[0].Content); c != "building\nvagent: the agent stopped while handing the job back; the job may be queued, and is not sent again\n" {
		t.Errorf("log %q", c)
	}
	// An entry whose requeue never left the agent is requeued at start.
	e2 := newEntry(t, sp, Job{TargetID: ids[0]}, "second\n", true)
	e2.Requeue = true
	if err := sp.save(e2); err != nil {
		t.Fatal(err)
	}
	a := h.agent(t, instant)
	stop := start(t, a)
	waitFor(t, 10*time.Second, "the second log", func() bool { return len(h.srv.Logs()) >= 2 })
	// Counted before the stop: the agent may have polled the requeued job
	// by then, and a stop in the middle of it hands it back once more.
	// The log is uploaded after the requeue's answer.
	if n := h.srv.Requests(vieterserver.RouteQueue); n != 1 {
		t.Errorf("%d requeue requests for a never-sent requeue, want 1", n)
	}
	_ = stop()
}
