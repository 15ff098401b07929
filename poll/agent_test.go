package poll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"

	"github.com/vieter-v/vagent/vieter"
)

// TestNeverPollsMoreThanFree checks at every poll, from the server's side,
// that the agent asks for at most the slots no build occupies.
func TestNeverPollsMoreThanFree(t *testing.T) {
	const slots = 3
	var running, peak atomic.Int32
	var violations []string
	var mu sync.Mutex
	h := newHarness(t, vieterserver.WithHook(func(route string, r *http.Request) {
		if route != vieterserver.RoutePoll {
			return
		}
		asked, _ := strconv.Atoi(r.URL.Query().Get("max"))
		if busy := int(running.Load()); asked > slots-busy || asked < 1 {
			mu.Lock()
			violations = append(violations, fmt.Sprintf("asked %d with %d builds running", asked, busy))
			mu.Unlock()
		}
	}))
	exec := ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Duration(1+rand.IntN(15)) * time.Millisecond)
		return Outcome{}, nil
	})
	h.addJobs(t, 40, false)
	a := h.agent(t, exec, WithSlots(slots), WithPollInterval(5*time.Millisecond))
	stop := start(t, a)
	waitFor(t, 30*time.Second, "40 logs", func() bool { return len(h.srv.Logs()) == 40 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Errorf("%d bad polls, e.g. %v", len(violations), violations[0])
	}
	if p := peak.Load(); p > slots || p < 2 {
		t.Errorf("peak concurrency %d, want 2..%d", p, slots)
	}
	t.Logf("%d polls for 40 jobs, peak concurrency %d", len(h.srv.Polls()), peak.Load())
}

// TestFinishedBuildPollsAtOnce: with an hour between polls, only a
// finishing build can make the agent poll again.
func TestFinishedBuildPollsAtOnce(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	var started atomic.Int32
	exec := ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
		started.Add(1)
		if j.TargetID == 1 {
			<-release
		}
		return Outcome{}, nil
	})
	h.addJobs(t, 1, false)
	clock := newFakeClock()
	a := h.agent(t, exec, WithSlots(1), WithPollInterval(time.Hour), WithClock(clock))
	start(t, a)
	waitFor(t, 5*time.Second, "the first build", func() bool { return started.Load() == 1 })
	h.addJobs(t, 1, false)
	// The loop polled once, got the job, and waits: its only slot is busy
	// and the clock does not move, so nothing but a finishing build can
	// make it poll again.
	if n := len(h.srv.Polls()); n != 1 {
		t.Fatalf("%d polls while the only slot was busy, want 1", n)
	}
	close(release)
	waitFor(t, 5*time.Second, "the second build", func() bool { return started.Load() == 2 })
	waitFor(t, 5*time.Second, "the poll after the second build", func() bool { return len(h.srv.Polls()) == 3 })
	// Then it waits a poll interval: a timer of an hour (armed after each
	// of the three polls), and no poll.
	if d := clock.waitArmed(t, 3); d != time.Hour {
		t.Errorf("idle timer %v, want the poll interval", d)
	}
	if n := len(h.srv.Polls()); n != 3 {
		t.Errorf("%d polls, want 3 (then quiet for an hour)", n)
	}
	clock.Advance(time.Hour)
	waitFor(t, 5*time.Second, "the poll an hour later", func() bool { return len(h.srv.Polls()) == 4 })
}

// TestIdlePollingFollowsInterval: an idle agent arms its timer with the
// poll interval after every poll and polls exactly when it fires.
func TestIdlePollingFollowsInterval(t *testing.T) {
	h := newHarness(t)
	const interval = 30 * time.Second
	clock := newFakeClock()
	a := h.agent(t, instant, WithPollInterval(interval), WithClock(clock))
	stop := start(t, a)
	for i := 1; i <= 6; i++ {
		if d := clock.waitArmed(t, i); d != interval {
			t.Fatalf("timer %d armed with %v, want %v", i, d, interval)
		}
		if n := len(h.srv.Polls()); n != i {
			t.Fatalf("%d polls before timer %d fired, want %d", n, i, i)
		}
		clock.Advance(interval - time.Nanosecond)
		if n := len(h.srv.Polls()); n != i {
			t.Fatalf("polled %d times before the interval was over", n)
		}
		clock.Advance(time.Nanosecond)
		waitFor(t, 5*time.Second, "the next poll", func() bool { return len(h.srv.Polls()) == i+1 })
	}
	_ = stop()
}

// fakeAPI fails polls with the errors of pollErr and records poll times.
type fakeAPI struct {
	mu      sync.Mutex
	times   []time.Time
	pollErr func(n int) error
}

func (f *fakeAPI) Poll(ctx context.Context, arch string, max int) ([]Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.times = append(f.times, time.Now())
	return nil, f.pollErr(len(f.times))
}
func (f *fakeAPI) UploadLog(context.Context, vieter.LogParams, *io.SectionReader) (int, error) {
	return 1, nil
}
func (f *fakeAPI) Requeue(context.Context, int, string, bool) error { return nil }

func (f *fakeAPI) intervals() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(f.times); i++ {
		out = append(out, f.times[i].Sub(f.times[i-1]))
	}
	return out
}

// TestPollBackoff: failed polls (5xx, malformed, cut) back off with
// jittered exponential delays capped by the poll interval; after a success
// the regular interval returns. The delays are those the loop armed its
// timer with.
func TestPollBackoff(t *testing.T) {
	errs := []error{&vieter.Error{Op: "poll", Code: 503}, vieter.ErrMalformed, io.ErrUnexpectedEOF}
	api := &fakeAPI{pollErr: func(n int) error {
		if n <= 8 {
			return errs[n%len(errs)]
		}
		return nil
	}}
	const interval = 300 * time.Millisecond
	clock := newFakeClock()
	a, err := New(api, instant, WithArch(testArch), WithDataDir(t.TempDir()), WithPollInterval(interval),
		WithBackoff(10*time.Millisecond, time.Hour), WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, a)
	defer stop()
	// Caps: 10, 20, 40, 80, 160, 300, 300, 300ms; each delay in [cap/2, cap].
	caps := []time.Duration{10, 20, 40, 80, 160, 300, 300, 300}
	for i, c := range caps {
		c *= time.Millisecond
		d := clock.waitArmed(t, i+1)
		if d < c/2 || d > c {
			t.Errorf("retry %d after %v, want in [%v, %v]", i+1, d, c/2, c)
		}
		clock.Advance(d)
	}
	// The ninth poll succeeds: the regular interval.
	if d := clock.waitArmed(t, 9); d != interval {
		t.Errorf("after success: %v, want %v", d, interval)
	}
	if n := len(api.intervals()) + 1; n != 9 {
		t.Errorf("%d polls, want 9", n)
	}
}

// TestUnauthorizedRetriedSlowly: a rejected key is retried after the
// unauthorized delay, not the backoff, and reported as a configuration error.
func TestUnauthorizedRetriedSlowly(t *testing.T) {
	h := newHarness(t)
	c, err := vieter.NewClient(h.ts.URL, "wrong-"+testKey)
	if err != nil {
		t.Fatal(err)
	}
	h.client = c
	clock := newFakeClock()
	a := h.agent(t, instant, WithPollInterval(10*time.Millisecond), WithUnauthorizedRetry(5*time.Minute), WithClock(clock))
	stop := start(t, a)
	for i := 1; i <= 3; i++ {
		if d := clock.waitArmed(t, i); d != 5*time.Minute {
			t.Errorf("after a 401: retry in %v, want 5m", d)
		}
		if n := h.srv.Requests(vieterserver.RoutePoll); n != i {
			t.Errorf("%d polls, want %d", n, i)
		}
		clock.Advance(5 * time.Minute)
	}
	_ = stop()
	if !strings.Contains(h.logBuf.String(), "check api_key") {
		t.Errorf("the log does not say to check api_key:\n%s", h.logBuf.String())
	}
}

func TestSetupErrorIsReported(t *testing.T) {
	h := newHarness(t)
	exec := ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
		if j.TargetID == 1 {
			fmt.Fprintln(log, "pulling archlinux:base-devel")
			return Outcome{}, fmt.Errorf("preparing builder image: registry unreachable: %w", ErrSetup)
		}
		if j.TargetID == 2 {
			panic("executor bug")
		}
		return Outcome{ExitCode: 0, Result: ResultSkipped}, nil
	})
	h.addJobs(t, 3, false)
	a := h.agent(t, exec, WithSlots(1))
	start(t, a)
	waitFor(t, 10*time.Second, "3 logs", func() bool { return len(h.srv.Logs()) == 3 })
	logs := h.srv.Logs()
	sort.Slice(logs, func(i, j int) bool { return logs[i].TargetID < logs[j].TargetID })
	if l := logs[0]; l.ExitCode != ExitSetupError || l.Arch != testArch ||
		!strings.Contains(string(l.Content), "pulling archlinux:base-devel\n") ||
		!strings.Contains(string(l.Content), "registry unreachable: build setup failed") {
		t.Errorf("setup error log: exit %d, %q", l.ExitCode, l.Content)
	}
	if l := logs[1]; l.ExitCode != ExitSetupError || !strings.Contains(string(l.Content), "executor panicked: executor bug") {
		t.Errorf("panic log: exit %d, %q", l.ExitCode, l.Content)
	}
	if l := logs[2]; l.ExitCode != 0 {
		t.Errorf("skipped build: exit %d", l.ExitCode)
	}
}

func TestBuildTimeout(t *testing.T) {
	h := newHarness(t)
	id := h.srv.AddTarget(vieterserver.Target{URL: "u", Repo: "bur", Timeout: 1})
	if err := h.srv.Enqueue(id, testArch, false); err != nil {
		t.Fatal(err)
	}
	var cause atomic.Value
	exec := ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		return Outcome{}, nil
	})
	a := h.agent(t, exec)
	start(t, a)
	waitFor(t, 10*time.Second, "the log", func() bool { return len(h.srv.Logs()) == 1 })
	l := h.srv.Logs()[0]
	if l.ExitCode != ExitTimeout || !strings.HasPrefix(logBody(t, l.Content), "\nvagent: timeout after 1 s; exit code 124; took ") {
		t.Errorf("timeout log: exit %d %q", l.ExitCode, l.Content)
	}
	if c, _ := cause.Load().(error); !errors.Is(c, ErrJobTimeout) {
		t.Errorf("executor saw cause %v", c)
	}
	if q := h.srv.Queued(testArch); len(q) != 0 {
		t.Errorf("a timed-out job was requeued: %v", q)
	}
}

func TestDataDirLocked(t *testing.T) {
	h := newHarness(t)
	start(t, h.agent(t, instant))
	waitFor(t, 5*time.Second, "first poll", func() bool { return len(h.srv.Polls()) > 0 })
	err := h.agent(t, instant).Run(t.Context())
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second agent on the same data dir: %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("another vagent (pid %d) uses data dir %s", os.Getpid(), h.dir); err == nil || err.Error() != want {
		t.Errorf("second agent's error %q, want %q", err, want)
	}
}

// TestDataDirLockTakenFirst: the caller takes the agent lock before
// anything else touches the data dir (vagent run) and hands it to Run.
func TestDataDirLockTakenFirst(t *testing.T) {
	h := newHarness(t)
	l, err := LockDataDir(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDataDir(h.dir); !errors.Is(err, ErrLocked) {
		t.Errorf("second lock: %v, want ErrLocked", err)
	}
	start(t, h.agent(t, instant, WithDataDirLock(l)))
	waitFor(t, 5*time.Second, "first poll", func() bool { return len(h.srv.Polls()) > 0 })
	// Run took no lock of its own.
	l.Unlock()
	l.Unlock()
	if l2, err := LockDataDir(h.dir); err != nil {
		t.Errorf("lock after Unlock, the agent running: %v", err)
	} else {
		l2.Unlock()
	}
}
