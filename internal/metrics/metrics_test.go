package metrics

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/vieter"
)

const (
	testKey  = "metrics-test-key-5c1d"
	testArch = "x86_64"
)

// scrape returns the samples of /metrics by "name{labels}".
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: content type %q", url, ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return resp.StatusCode
}

type setup struct {
	srv     *vieterserver.Server
	ts      *httptest.Server
	agent   *poll.Agent
	metrics *httptest.Server
	dir     string
}

// start runs an agent with exec against a test server, with its metrics
// served.
func start(t *testing.T, exec poll.Executor, slots int, margin time.Duration, opts ...vieterserver.Option) *setup {
	t.Helper()
	srv, ts := vieterserver.NewTest(t, append([]vieterserver.Option{vieterserver.WithAPIKey(testKey)}, opts...)...)
	c, err := vieter.NewClient(ts.URL, testKey, vieter.WithHTTPClient(ts.Client()))
	if err != nil {
		t.Fatal(err)
	}
	m := New()
	dir := t.TempDir()
	a, err := poll.New(c, exec, poll.WithArch(testArch), poll.WithDataDir(dir), poll.WithSlots(slots),
		poll.WithPollInterval(50*time.Millisecond), poll.WithBackoff(5*time.Millisecond, 50*time.Millisecond),
		poll.WithGracePeriod(0), poll.WithDeliverTimeout(2*time.Second), poll.WithObserver(m))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WatchAgent(a); err != nil {
		t.Fatal(err)
	}
	h, err := Handler(m, a, WithDataDir(dir), WithReadyMargin(margin))
	if err != nil {
		t.Fatal(err)
	}
	ms := httptest.NewServer(h)
	t.Cleanup(ms.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return &setup{srv: srv, ts: ts, agent: a, metrics: ms, dir: dir}
}

func (s *setup) addJobs(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		id := s.srv.AddTarget(vieterserver.Target{Kind: "git", URL: fmt.Sprintf("https://example.org/p%d.git", i), Repo: "bur"})
		if err := s.srv.Enqueue(id, testArch, false); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCountersMoveAsBuildsFinish drives an agent with a fake executor
// against the test server and scrapes /metrics as builds finish.
func TestCountersMoveAsBuildsFinish(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	n := 0
	// Builds in order: success, failure, setup error, skipped, then one
	// that waits for release.
	exec := poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		fmt.Fprintf(log, "build %d\n", k)
		switch k {
		case 1:
			return poll.Outcome{}, nil
		case 2:
			return poll.Outcome{ExitCode: 2}, nil
		case 3:
			return poll.Outcome{}, fmt.Errorf("no builder image: %w", poll.ErrSetup)
		case 4:
			return poll.Outcome{Result: poll.ResultSkipped}, nil
		}
		<-release
		return poll.Outcome{}, nil
	})
	s := start(t, exec, 1, time.Second)
	m0 := scrape(t, s.metrics.URL)
	if m0[`vagent_builds_total{result="success"}`] != 0 || m0[`vagent_slots{state="empty"}`] != 1 {
		t.Errorf("before any job: %v", m0)
	}
	s.addJobs(t, 4)
	waitFor(t, "4 logs", func() bool { return len(s.srv.Logs()) == 4 })
	waitFor(t, "4 accepted uploads", func() bool {
		return scrape(t, s.metrics.URL)[`vagent_log_uploads_total{result="accepted"}`] == 4
	})
	m1 := scrape(t, s.metrics.URL)
	for name, want := range map[string]float64{
		`vagent_builds_total{result="success"}`:                 1,
		`vagent_builds_total{result="failure"}`:                 1,
		`vagent_builds_total{result="setup-error"}`:             1,
		`vagent_builds_total{result="skipped"}`:                 1,
		`vagent_builds_total{result="timeout"}`:                 0,
		`vagent_build_duration_seconds_count{result="success"}`: 1,
		`vagent_build_duration_seconds_count{result="failure"}`: 1,
		`vagent_jobs_received_total`:                            4,
		`vagent_log_uploads_pending`:                            0,
		`vagent_log_uploads_total{result="failed"}`:             0,
		`vagent_poll_errors_total{kind="http_5xx"}`:             0,
		`vagent_slots{state="running"}`:                         0,
	} {
		if got, ok := m1[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if m1["vagent_polls_total"] < 4 || m1["vagent_last_poll_success_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("polls %v, last success %v", m1["vagent_polls_total"], m1["vagent_last_poll_success_timestamp_seconds"])
	}
	if _, ok := m1["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	// A running build shows in the slots gauge and in /status.
	s.addJobs(t, 1)
	waitFor(t, "a running slot", func() bool { return scrape(t, s.metrics.URL)[`vagent_slots{state="running"}`] == 1 })
	var body StatusJSON
	code := getJSON(t, s.metrics.URL+"/status", &body)
	st, err := body.Decode()
	if err != nil || code != 200 || len(st.Slots) != 1 || st.Slots[0].State != "running" ||
		st.Slots[0].Job == nil || st.Slots[0].Job.TargetID != 5 || st.Slots[0].Since.IsZero() || st.Arch != testArch {
		t.Errorf("/status %d, %v: %+v", code, err, st)
	}
	// Durations are strings, as in the configuration.
	var raw map[string]any
	getJSON(t, s.metrics.URL+"/status", &raw)
	if raw["poll_interval"] != "50ms" || st.PollInterval != 50*time.Millisecond {
		t.Errorf("/status poll_interval %#v, decoded %v; want \"50ms\"", raw["poll_interval"], st.PollInterval)
	}
	close(release)
	waitFor(t, "the fifth build", func() bool { return scrape(t, s.metrics.URL)[`vagent_builds_total{result="success"}`] == 2 })
}

// TestUploadMetrics: failed attempts and refused logs are counted, and
// pending logs show while the server refuses them.
func TestUploadMetrics(t *testing.T) {
	exec := poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) {
		return poll.Outcome{}, nil
	})
	s := start(t, exec, 2, time.Second, vieterserver.WithFaults(vieterserver.FaultConfig{Rate: 1,
		Kinds: []vieterserver.Fault{vieterserver.Fault5xx}, Routes: []string{vieterserver.RouteLogUpload}}))
	s.addJobs(t, 2)
	waitFor(t, "failed uploads", func() bool {
		m := scrape(t, s.metrics.URL)
		return m[`vagent_log_uploads_total{result="failed"}`] >= 4 && m["vagent_log_uploads_pending"] == 2
	})
}

// TestReadyzTurnsUnhealthy: /readyz is 200 while polls succeed and 503
// once the server is unreachable; /healthz stays 200.
func TestReadyzTurnsUnhealthy(t *testing.T) {
	exec := poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) { return poll.Outcome{}, nil })
	s := start(t, exec, 1, 100*time.Millisecond)
	var rep Readiness
	waitFor(t, "ready", func() bool { return getJSON(t, s.metrics.URL+"/readyz", &rep) == 200 })
	if !rep.Ready || !rep.Checks["poll"].OK || !rep.Checks["data_dir"].OK {
		t.Errorf("ready body %+v", rep)
	}
	s.ts.CloseClientConnections()
	s.ts.Close() // the server is gone
	waitFor(t, "not ready", func() bool { return getJSON(t, s.metrics.URL+"/readyz", &rep) == 503 })
	if rep.Ready || rep.Checks["poll"].OK || !strings.Contains(rep.Checks["poll"].Detail, "last error") {
		t.Errorf("unready body %+v", rep)
	}
	if m := scrape(t, s.metrics.URL); m[`vagent_poll_errors_total{kind="network"}`] == 0 {
		t.Errorf("no network poll errors counted: %v", m[`vagent_poll_errors_total{kind="network"}`])
	}
	var h map[string]string
	if code := getJSON(t, s.metrics.URL+"/healthz", &h); code != 200 || h["status"] != "ok" {
		t.Errorf("/healthz %d %v", code, h)
	}
}

func TestReady(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	busy := []poll.SlotStatus{{State: "running"}}
	free := []poll.SlotStatus{{State: "running"}, {State: "empty"}}
	base := poll.Status{PollInterval: 30 * time.Second, Started: now.Add(-time.Hour)}
	with := func(f func(*poll.Status)) poll.Status { s := base; f(&s); return s }
	gone := filepath.Join(t.TempDir(), "gone")
	tests := []struct {
		name   string
		st     poll.Status
		dir    string
		ready  bool
		detail string
	}{
		{"never polled", with(func(s *poll.Status) { s.Slots = free }), "", false, "no successful poll yet"},
		{"never polled, error", with(func(s *poll.Status) { s.Slots = free; s.LastPollError = "poll: 401" }), "", false, "last error: poll: 401"},
		{"recent poll", with(func(s *poll.Status) { s.Slots = free; s.LastPollOK = now.Add(-65 * time.Second) }), "", true, ""},
		{"old poll", with(func(s *poll.Status) { s.Slots = free; s.LastPollOK = now.Add(-75 * time.Second) }), "", false, "last successful poll 1m15s ago (limit 1m10s)"},
		{"busy, old poll", with(func(s *poll.Status) { s.Slots = busy; s.LastPollOK = now.Add(-time.Hour) }), "", true, "every slot is busy"},
		{"busy, last poll failed", with(func(s *poll.Status) { s.Slots = busy; s.LastPollOK = now.Add(-time.Hour); s.LastPollError = "x" }), "", false, "last error: x"},
		{"stopping", with(func(s *poll.Status) { s.Slots = free; s.LastPollOK = now; s.Stopping = true }), "", false, "stopping"},
		{"data dir gone", with(func(s *poll.Status) { s.Slots = free; s.LastPollOK = now }), gone, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := Ready(tt.st, now, 10*time.Second, tt.dir)
			if rep.Ready != tt.ready || !strings.Contains(rep.Checks["poll"].Detail, tt.detail) {
				t.Errorf("%+v, want ready=%v with %q", rep, tt.ready, tt.detail)
			}
		})
	}
	if rep := Ready(with(func(s *poll.Status) { s.LastPollOK = now }), now, 0, gone); rep.Checks["data_dir"].OK {
		t.Errorf("missing data dir counted as writable: %+v", rep)
	}
	dir := t.TempDir()
	if rep := Ready(with(func(s *poll.Status) { s.LastPollOK = now }), now, 0, dir); !rep.Ready {
		t.Errorf("%+v", rep)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the check left files: %v", left)
	}
}

// TestImageHooks: the hooks builder and oci code call move their metrics.
func TestImageHooks(t *testing.T) {
	m := New()
	oldest := time.Now().Add(-time.Hour)
	calls := 0
	if err := m.WatchImages(func() (int, time.Time, error) {
		calls++
		if calls > 1 {
			return 0, time.Time{}, errors.New("store unreadable")
		}
		return 3, oldest, nil
	}); err != nil {
		t.Fatal(err)
	}
	h, err := Handler(m, fixed{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	m.ImagePrepared(90*time.Second, nil)
	m.ImagePrepared(time.Second, errors.New("pacman failed"))
	layer := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	m.OCIProgress(oci.Progress{Phase: oci.PhaseDownload, Blob: layer, Done: 10, Total: 100})
	m.OCIProgress(oci.Progress{Phase: oci.PhaseVerified, Blob: layer, Done: 100, Total: 100})
	m.OCIProgress(oci.Progress{Phase: oci.PhaseCached, Blob: layer, Done: 50, Total: 50})
	m.OCIProgress(oci.Progress{Phase: oci.PhaseApplied, Blob: layer, Done: 100, Total: 100})
	m.OCIProgress(oci.Progress{Phase: oci.PhaseApplied, Blob: layer, Done: 50, Total: 50})
	got := scrape(t, ts.URL)
	for name, want := range map[string]float64{
		"vagent_builder_images": 3,
		`vagent_builder_image_preparations_total{result="success"}`: 1,
		`vagent_builder_image_preparations_total{result="failure"}`: 1,
		"vagent_builder_image_preparation_duration_seconds_count":   2,
		"vagent_builder_image_preparation_duration_seconds_sum":     91,
		"vagent_image_pulled_bytes_total":                           100,
		"vagent_image_unpacked_bytes_total":                         150,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if age := got["vagent_builder_image_oldest_age_seconds"]; age < 3599 || age > 3700 {
		t.Errorf("oldest age %v", age)
	}
	// A failing image source makes the scrape fail visibly, not lie.
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Errorf("scrape with a failing source: %s", resp.Status)
	}
}

type fixed struct{}

func (fixed) Status() poll.Status { return poll.Status{} }

// TestPublishedPackages: the series exist from the start, and each
// published package moves the one of how it was confirmed.
func TestPublishedPackages(t *testing.T) {
	m := New()
	h, err := Handler(m, fixed{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	before := scrape(t, ts.URL)
	for _, c := range []string{"answer", "check", "failed"} {
		if v, ok := before[`vagent_packages_published_total{confirmed="`+c+`"}`]; !ok || v != 0 {
			t.Errorf("confirmed=%s: %v, %v before any build; want a 0 series", c, v, ok)
		}
	}
	m.PackagePublished("answer")
	m.PackagePublished("answer")
	m.PackagePublished("check")
	m.PackagePublished("")
	got := scrape(t, ts.URL)
	for c, want := range map[string]float64{"answer": 2, "check": 1, "failed": 1} {
		if v := got[`vagent_packages_published_total{confirmed="`+c+`"}`]; v != want {
			t.Errorf("confirmed=%s: %v, want %v", c, v, want)
		}
	}
}

// TestDocumentedMetricsExist: every metric docs/configuration.md lists is
// exported from the start, before any build, poll or image, and no
// vagent_ metric is undocumented.
func TestDocumentedMetricsExist(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if rest, ok := strings.CutPrefix(line, "| `vagent_"); ok {
			name, _, _ := strings.Cut(rest, "`")
			documented["vagent_"+name] = true
		}
	}
	if len(documented) < 10 {
		t.Fatalf("found %d metrics in docs/configuration.md: the table changed", len(documented))
	}
	m := New()
	if err := m.SetBuildInfo("1.2.3", "abc", "build-01"); err != nil {
		t.Fatal(err)
	}
	if err := m.WatchAgent(fixed{}); err != nil {
		t.Fatal(err)
	}
	if err := m.WatchImages(func() (int, time.Time, error) { return 0, time.Time{}, nil }); err != nil {
		t.Fatal(err)
	}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "vagent_") && len(f.GetMetric()) > 0 {
			exported[f.GetName()] = true
		}
		if f.GetName() == "vagent_build_info" {
			labels := map[string]string{}
			for _, l := range f.GetMetric()[0].GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if len(labels) != 4 || labels["agent"] != "build-01" || labels["version"] != "1.2.3" || f.GetMetric()[0].GetGauge().GetValue() != 1 {
				t.Errorf("vagent_build_info %v", f.GetMetric()[0])
			}
		}
	}
	for name := range documented {
		if !exported[name] {
			t.Errorf("%s is documented but not exported at start", name)
		}
	}
	for name := range exported {
		if !documented[name] {
			t.Errorf("%s is exported but not documented in docs/configuration.md", name)
		}
	}
}

// TestLogsEndpoint: /logs/slot/N and /logs/target/ID serve a build's log
// (header first), ?follow=true streams it as the build writes; a server
// shutdown ends a followed log at once; bad and unknown selectors are
// 400 and 404.
func TestLogsEndpoint(t *testing.T) {
	gate := make(chan struct{})
	exec := poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) {
		fmt.Fprintf(log, "line one of %d\n", j.TargetID)
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return poll.Outcome{}, nil
	})
	s := start(t, exec, 1, time.Minute)
	defer close(gate)
	s.addJobs(t, 1)
	waitFor(t, "the running build", func() bool { return s.agent.Status().Slots[0].Log != "" })

	h, err := Handler(New(), s.agent, WithDataDir(s.dir))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, h) }()
	defer cancel()

	for path, want := range map[string]int{"/logs/slot/x": 400, "/logs/target/0": 400, "/logs/slot/3": 404,
		"/logs/target/99": 404, "/logs/slot/0?follow=maybe": 400} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %s, want %d", path, resp.Status, want)
		}
	}
	resp, err := http.Get(base + "/logs/target/1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" ||
		!strings.HasPrefix(string(b), "vagent: ") || !strings.HasSuffix(string(b), "\n\nline one of 1\n") {
		t.Errorf("/logs/target/1: %s %q %q", resp.Status, resp.Header.Get("Content-Type"), b)
	}

	resp, err = http.Get(base + "/logs/slot/0?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("followed log ended early: %v", err)
		}
		if line == "line one of 1\n" {
			break
		}
	}
	start := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("the server did not stop while a log was followed")
	}
	if _, err := io.ReadAll(br); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("followed log after the shutdown: %v", err)
	}
	t.Logf("shutdown with a followed log took %v", time.Since(start))
}
