package vieterserver

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// outcome classifies what a client saw.
func outcome(ts interface{ Client() *http.Client }, url string) (string, []Job) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Api-Key", testKey)
	resp, err := ts.Client().Do(req)
	if err != nil {
		return "drop", nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Sprint(resp.StatusCode), nil
	}
	var env struct {
		Data []Job `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return "malformed", nil
	}
	return "ok", env.Data
}

func TestFaultsDeterministicAndHarmless(t *testing.T) {
	run := func(seed uint64) ([]string, *Server) {
		s, ts := newServer(t, WithFaults(FaultConfig{Rate: 0.3, Seed: seed}))
		ts.Client().Transport.(*http.Transport).DisableKeepAlives = true
		for i := 0; i < 40; i++ {
			id := s.AddTarget(Target{URL: fmt.Sprint("u", i), Repo: "bur"})
			if err := s.Enqueue(id, "x86_64", false); err != nil {
				t.Fatal(err)
			}
		}
		var seq []string
		seen := map[int]int{}
		for i := 0; i < 200 && len(s.Queued("x86_64")) > 0; i++ {
			o, jobs := outcome(ts, ts.URL+"/api/v1/jobs/poll?arch=x86_64&max=1")
			seq = append(seq, o)
			for _, j := range jobs {
				seen[j.TargetID]++
			}
		}
		// A faulted poll never pops: every job arrives exactly once.
		if len(seen) != 40 {
			t.Errorf("seed %d: %d distinct jobs received, want 40", seed, len(seen))
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("seed %d: job of target %d received %d times", seed, id, n)
			}
		}
		return seq, s
	}
	a, s := run(7)
	b, _ := run(7)
	if d := cmp.Diff(a, b); d != "" {
		t.Errorf("same seed, different faults (-first +second):\n%s", d)
	}
	c, _ := run(8)
	if cmp.Equal(a, c) {
		t.Error("different seeds gave the same faults")
	}
	kinds := map[string]int{}
	for _, o := range a {
		kinds[o]++
	}
	faults := len(a) - kinds["ok"]
	if kinds["drop"] == 0 || kinds["malformed"] == 0 || kinds["ok"] != 40 || faults == 0 {
		t.Errorf("outcomes %v: want every kind of fault and 40 good polls", kinds)
	}
	rate := float64(faults) / float64(len(a))
	if rate < 0.1 || rate > 0.5 {
		t.Errorf("fault rate %.2f far from 0.3", rate)
	}
	f := s.Faults()
	if f[Fault5xx]+f[FaultDrop]+f[FaultMalformedJSON] != faults {
		t.Errorf("Faults() = %v, %d faults seen", f, faults)
	}
	st := s.Statuses(RoutePoll)
	if st[StatusDropped] != kinds["drop"] {
		t.Errorf("Statuses dropped = %d, client saw %d", st[StatusDropped], kinds["drop"])
	}
}

func TestFaultRoutesAndLatency(t *testing.T) {
	s, ts := newServer(t, WithFaults(FaultConfig{Rate: 1, Kinds: []Fault{FaultLatency}, MaxLatency: 30 * time.Millisecond, Routes: []string{RouteLogList}}))
	start := time.Now()
	for i := 0; i < 5; i++ {
		if resp, _ := do(t, ts, "GET", "/api/v1/logs", testKey, nil); resp.StatusCode != 200 {
			t.Fatalf("latency fault must not fail: %d", resp.StatusCode)
		}
	}
	if s.Faults()[FaultLatency] != 5 || time.Since(start) < 10*time.Millisecond {
		t.Errorf("latency faults %v in %v", s.Faults(), time.Since(start))
	}
	// Routes not listed are never faulted.
	s2, ts2 := newServer(t, WithFaults(FaultConfig{Rate: 1, Routes: []string{RoutePublish}}))
	for i := 0; i < 10; i++ {
		if resp, _ := do(t, ts2, "GET", "/api/v1/jobs/poll?arch=x&max=1", testKey, nil); resp.StatusCode != 200 {
			t.Fatalf("poll faulted although only publish is: %d", resp.StatusCode)
		}
	}
	if len(s2.Faults()) != 0 {
		t.Errorf("faults %v", s2.Faults())
	}
	if _, err := New(WithFaults(FaultConfig{Rate: 1.5})); err == nil {
		t.Error("rate 1.5 accepted")
	}
}

func TestHookCanBlock(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan string, 1)
	s, ts := newServer(t, WithHook(func(route string, _ *http.Request) {
		if route == RouteLogUpload {
			entered <- route
			<-release
		}
	}))
	s.AddTarget(Target{URL: "u", Repo: "bur"})
	done := make(chan int)
	go func() {
		req, _ := http.NewRequest("POST", ts.URL+"/api/v1/logs?target=1&startTime=1&endTime=2&arch=x&exitCode=0", nil)
		req.Header.Set("X-Api-Key", testKey)
		resp, err := ts.Client().Do(req)
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-entered
	if len(s.Logs()) != 0 {
		t.Error("log stored while the hook blocks")
	}
	close(release)
	if code := <-done; code != 200 {
		t.Errorf("upload after release: %d", code)
	}
}
