package poll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
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
	a := h.agent(t, exec, WithSlots(1), WithPollInterval(time.Hour))
	start(t, a)
	waitFor(t, 5*time.Second, "the first build", func() bool { return started.Load() == 1 })
	h.addJobs(t, 1, false)
	time.Sleep(100 * time.Millisecond)
	if n := len(h.srv.Polls()); n != 1 {
		t.Fatalf("%d polls while the only slot was busy, want 1", n)
	}
	released := time.Now()
	close(release)
	waitFor(t, 5*time.Second, "the second build", func() bool { return started.Load() == 2 })
	polls := h.srv.Polls()
	if d := polls[1].Time.Sub(released); d > time.Second {
		t.Errorf("second poll %v after the build finished, want at once", d)
	}
	waitFor(t, 5*time.Second, "the poll after the second build", func() bool { return len(h.srv.Polls()) == 3 })
	time.Sleep(100 * time.Millisecond)
	if n := len(h.srv.Polls()); n != 3 {
		t.Errorf("%d polls, want 3 (then quiet for an hour)", n)
	}
}

func intervals(polls []vieterserver.PollRecord) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(polls); i++ {
		out = append(out, polls[i].Time.Sub(polls[i-1].Time))
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func TestIdlePollingFollowsInterval(t *testing.T) {
	h := newHarness(t)
	const interval = 80 * time.Millisecond
	a := h.agent(t, instant, WithPollInterval(interval))
	stop := start(t, a)
	time.Sleep(12 * interval)
	_ = stop()
	iv := intervals(h.srv.Polls())
	if len(iv) < 6 || len(iv) > 13 {
		t.Fatalf("%d polls in %v at %v", len(iv)+1, 12*interval, interval)
	}
	if m := median(iv); m < interval || m > interval*3/2 {
		t.Errorf("median interval %v, want about %v (all: %v)", m, interval, iv)
	}
	for _, d := range iv {
		if d < interval*9/10 {
			t.Errorf("interval %v shorter than %v", d, interval)
		}
	}
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

func TestPollBackoff(t *testing.T) {
	// Eight failures (5xx, dropped connection, malformed answer), then success.
	errs := []error{&vieter.Error{Op: "poll", Code: 503}, vieter.ErrMalformed, io.ErrUnexpectedEOF}
	api := &fakeAPI{pollErr: func(n int) error {
		if n <= 8 {
			return errs[n%len(errs)]
		}
		return nil
	}}
	const interval = 300 * time.Millisecond
	a, err := New(api, instant, WithArch(testArch), WithDataDir(t.TempDir()), WithPollInterval(interval),
		WithBackoff(10*time.Millisecond, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, a)
	waitFor(t, 10*time.Second, "10 polls", func() bool { return len(api.intervals()) >= 10 })
	_ = stop()
	iv := api.intervals()
	// Caps: 10, 20, 40, 80, 160, 300, 300, 300ms; each delay in [cap/2, cap].
	caps := []time.Duration{10, 20, 40, 80, 160, 300, 300, 300}
	slack := 40 * time.Millisecond
	for i, c := range caps {
		c *= time.Millisecond
		if iv[i] < c/2 || iv[i] > c+slack {
			t.Errorf("retry %d after %v, want in [%v, %v]", i+1, iv[i], c/2, c)
		}
	}
	// After the success, the regular interval.
	if iv[8] < interval || iv[8] > interval+slack {
		t.Errorf("after success: %v, want %v", iv[8], interval)
	}
}

func TestUnauthorizedRetriedSlowly(t *testing.T) {
	h := newHarness(t)
	c, err := vieter.NewClient(h.ts.URL, "wrong-"+testKey)
	if err != nil {
		t.Fatal(err)
	}
	h.client = c
	a := h.agent(t, instant, WithPollInterval(10*time.Millisecond), WithUnauthorizedRetry(300*time.Millisecond))
	stop := start(t, a)
	time.Sleep(700 * time.Millisecond)
	_ = stop()
	if n := h.srv.Requests(vieterserver.RoutePoll); n < 2 || n > 4 {
		t.Errorf("%d polls in 700ms with a 300ms retry after 401, want 3", n)
	}
	out := h.logBuf.String()
	if !strings.Contains(out, "check api_key") || strings.Contains(out, testKey) {
		t.Errorf("log must say check api_key and never show the key:\n%s", out)
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
	if l.ExitCode != ExitTimeout || !strings.HasPrefix(string(l.Content), "\nvagent: timeout after 1 s; exit code 124; took ") {
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
}
