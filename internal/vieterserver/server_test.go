package vieterserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testKey = "s3cret-key"

// do sends a request with the test key unless key is "-" (none).
func do(t *testing.T, ts *httptest.Server, method, path, key string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "-" {
		req.Header.Set("X-Api-Key", key)
	}
	if s, ok := body.(*strings.Reader); ok {
		req.ContentLength = int64(s.Len())
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func decode(t *testing.T, b []byte, data any) string {
	t.Helper()
	var env struct {
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("answer %q is not the JSON envelope: %v", b, err)
	}
	if data != nil {
		if err := json.Unmarshal(env.Data, data); err != nil {
			t.Fatalf("data %s: %v", env.Data, err)
		}
	}
	return env.Message
}

func newServer(t *testing.T, opts ...Option) (*Server, *httptest.Server) {
	t.Helper()
	return NewTest(t, append([]Option{WithAPIKey(testKey)}, opts...)...)
}

func TestAuth(t *testing.T) {
	s, ts := newServer(t)
	id := s.AddTarget(Target{URL: "https://example.org/a.git", Repo: "bur"})
	routes := []struct{ method, path string }{
		{"GET", "/api/v1/jobs/poll?arch=x86_64&max=1"},
		{"POST", "/api/v1/jobs/queue?target=1&arch=x86_64"},
		{"GET", "/api/v1/targets"},
		{"POST", "/api/v1/logs?target=1&startTime=1&endTime=2&arch=x86_64&exitCode=0"},
		{"GET", "/api/v1/logs"},
		{"GET", "/api/v1/logs/1"},
		{"GET", "/api/v1/logs/1/content"},
		{"DELETE", "/api/v1/logs/1"},
		{"POST", "/bur/publish"},
	}
	for _, rt := range routes {
		for _, key := range []string{"-", "", "wrong", testKey + "x"} {
			resp, body := do(t, ts, rt.method, rt.path, key, strings.NewReader("x"))
			// Vieter's canned 401: text/plain with a Content-Length.
			if resp.StatusCode != http.StatusUnauthorized || string(body) != "401 Unauthorized" ||
				resp.ContentLength != int64(len(body)) || resp.Header.Get("Content-Type") != "text/plain" {
				t.Errorf("%s %s with key %q: %d %q (length %d, %s), want the canned 401", rt.method, rt.path, key, resp.StatusCode, body, resp.ContentLength, resp.Header.Get("Content-Type"))
			}
		}
	}
	if q := s.Queued("x86_64"); len(q) != 0 {
		t.Errorf("unauthorized requests queued %v", q)
	}
	if len(s.Logs()) != 0 {
		t.Errorf("unauthorized upload stored a log")
	}
	_ = id
	if resp, _ := do(t, ts, "GET", "/health", "-", nil); resp.StatusCode != 200 {
		t.Errorf("health without key: %d, want 200", resp.StatusCode)
	}
	// The repository is public.
	if resp, _ := do(t, ts, "GET", "/bur/x86_64/foo-1-1", "-", nil); resp.StatusCode != 404 {
		t.Errorf("repo file without key: %d, want 404", resp.StatusCode)
	}
}

func TestPollPops(t *testing.T) {
	s, ts := newServer(t)
	a := s.AddTarget(Target{Kind: "git", URL: "https://example.org/a.git", Branch: "main", Path: "sub", Repo: "bur"})
	b := s.AddTarget(Target{Kind: "url", URL: "https://example.org/PKGBUILD", Repo: "bur", BaseImage: "img:1", Timeout: 60})
	for _, j := range []struct {
		id    int
		arch  string
		force bool
	}{{a, "x86_64", false}, {b, "x86_64", true}, {a, "x86_64", true}, {b, "aarch64", false}} {
		if err := s.Enqueue(j.id, j.arch, j.force); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Enqueue(99, "x86_64", false); err == nil {
		t.Error("Enqueue of an unknown target succeeded")
	}

	resp, body := do(t, ts, "GET", "/api/v1/jobs/poll?arch=x86_64&max=2", testKey, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("poll: %d %s", resp.StatusCode, body)
	}
	// The exact field names of the contract.
	var raw []map[string]any
	decode(t, body, &raw)
	want := []map[string]any{
		{"target_id": 1.0, "kind": "git", "url": "https://example.org/a.git", "branch": "main", "path": "sub",
			"repo": "bur", "base_image": "archlinux:base-devel", "force": false, "timeout": 3600.0},
		{"target_id": 2.0, "kind": "url", "url": "https://example.org/PKGBUILD", "branch": "", "path": "",
			"repo": "bur", "base_image": "img:1", "force": true, "timeout": 60.0},
	}
	if d := cmp.Diff(want, raw); d != "" {
		t.Errorf("poll answer (-want +got):\n%s", d)
	}
	_, body = do(t, ts, "GET", "/api/v1/jobs/poll?arch=x86_64&max=5", testKey, nil)
	var jobs []Job
	decode(t, body, &jobs)
	if len(jobs) != 1 || jobs[0].TargetID != a || !jobs[0].Force {
		t.Errorf("second poll: %+v, want the forced job of target %d", jobs, a)
	}
	_, body = do(t, ts, "GET", "/api/v1/jobs/poll?arch=x86_64&max=5", testKey, nil)
	if m := decode(t, body, &jobs); len(jobs) != 0 || !strings.Contains(string(body), `"data":[]`) {
		t.Errorf("empty poll: %s (%q), want data []", body, m)
	}
	if q := s.Queued("aarch64"); len(q) != 1 {
		t.Errorf("aarch64 queue: %v, want untouched", q)
	}
	polls := s.Polls()
	if len(polls) != 3 || polls[0].Max != 2 || polls[0].Returned != 2 || polls[2].Returned != 0 {
		t.Errorf("poll records: %+v", polls)
	}
	if n := s.Requests(RoutePoll); n != 3 {
		t.Errorf("Requests(poll) = %d, want 3", n)
	}
}

func TestBadRequests(t *testing.T) {
	s, ts := newServer(t)
	s.AddTarget(Target{URL: "u", Repo: "bur"})
	tests := []struct {
		name, method, path string
		status             int
		message            string
	}{
		{"poll no arch", "GET", "/api/v1/jobs/poll?max=1", 400, "Missing arch query arg."},
		{"poll no max", "GET", "/api/v1/jobs/poll?arch=x86_64", 400, "Missing max query arg."},
		{"poll bad max", "GET", "/api/v1/jobs/poll?arch=x86_64&max=x", 400, "Invalid max query arg."},
		{"queue no target", "POST", "/api/v1/jobs/queue?arch=x86_64", 400, "Missing target query arg."},
		{"queue no arch", "POST", "/api/v1/jobs/queue?target=1", 400, "Missing arch query arg."},
		{"queue unknown target", "POST", "/api/v1/jobs/queue?target=7&arch=x86_64", 400, "Unknown target id."},
		{"log no start", "POST", "/api/v1/logs?target=1&endTime=2&arch=x86_64&exitCode=0", 400, "Invalid or missing start time."},
		{"log zero start", "POST", "/api/v1/logs?target=1&startTime=0&endTime=2&arch=x86_64&exitCode=0", 400, "Invalid or missing start time."},
		{"log zero end", "POST", "/api/v1/logs?target=1&startTime=1&endTime=0&arch=x86_64&exitCode=0", 400, "Invalid or missing end time."},
		{"log no exit", "POST", "/api/v1/logs?target=1&startTime=1&endTime=2&arch=x86_64", 400, "Invalid or missing exit code."},
		{"log no arch", "POST", "/api/v1/logs?target=1&startTime=1&endTime=2&exitCode=0", 400, "Missing arch."},
		{"log no target", "POST", "/api/v1/logs?startTime=1&endTime=2&arch=x86_64&exitCode=0", 400, "Invalid or missing target."},
		{"log unknown target", "POST", "/api/v1/logs?target=9&startTime=1&endTime=2&arch=x86_64&exitCode=0", 400, "Unknown target."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, ts, tt.method, tt.path, testKey, strings.NewReader("body"))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			if m := decode(t, body, nil); m != tt.message {
				t.Errorf("message %q, want %q", m, tt.message)
			}
		})
	}
	if len(s.Logs()) != 0 {
		t.Errorf("a rejected upload stored a log")
	}
}

func TestQueueEndpoint(t *testing.T) {
	s, ts := newServer(t)
	id := s.AddTarget(Target{URL: "u", Repo: "bur"})
	for _, q := range []string{"target=1&arch=x86_64", "target=1&arch=x86_64&force", "target=1&arch=x86_64&force=true"} {
		if resp, body := do(t, ts, "POST", "/api/v1/jobs/queue?"+q, testKey, nil); resp.StatusCode != 200 {
			t.Fatalf("queue %s: %d %s", q, resp.StatusCode, body)
		}
	}
	var force []bool
	for _, j := range s.Queued("x86_64") {
		if j.TargetID != id {
			t.Errorf("queued target %d, want %d", j.TargetID, id)
		}
		force = append(force, j.Force)
	}
	if d := cmp.Diff([]bool{false, true, true}, force); d != "" {
		t.Errorf("force flags (-want +got):\n%s", d)
	}
}

func TestTargetsEndpoint(t *testing.T) {
	s, ts := newServer(t)
	resp, body := do(t, ts, "POST", "/api/v1/targets?kind=url&url="+url.QueryEscape("http://x/PKGBUILD")+"&repo=demo&arch=x86_64,aarch64", testKey, nil)
	var id int
	decode(t, body, &id)
	if resp.StatusCode != 200 || id != 1 {
		t.Fatalf("add target: %d %s", resp.StatusCode, body)
	}
	tg, ok := s.Target(1)
	if !ok || tg.Kind != "url" || tg.Repo != "demo" || len(tg.Arches) != 2 {
		t.Errorf("target %+v", tg)
	}
	if resp, _ := do(t, ts, "POST", "/api/v1/targets?kind=svn&url=x&repo=demo", testKey, nil); resp.StatusCode != 400 {
		t.Errorf("bad kind: %d, want 400", resp.StatusCode)
	}
	var list []Target
	_, body = do(t, ts, "GET", "/api/v1/targets", testKey, nil)
	decode(t, body, &list)
	if len(list) != 1 || list[0].URL != "http://x/PKGBUILD" {
		t.Errorf("targets list: %+v", list)
	}
}

// chunked is a body of unknown length: Go's client sends it chunked.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

func TestLogs(t *testing.T) {
	dir := t.TempDir()
	s, ts := newServer(t, WithDataDir(dir))
	s.AddTarget(Target{URL: "u", Repo: "bur"})
	s.AddTarget(Target{URL: "v", Repo: "bur"})

	// Without Content-Length: 411 and nothing stored.
	resp, body := do(t, ts, "POST", "/api/v1/logs?target=1&startTime=1&endTime=2&arch=x86_64&exitCode=0", testKey, chunked{strings.NewReader("log")})
	if resp.StatusCode != http.StatusLengthRequired {
		t.Fatalf("chunked upload: %d %s, want 411", resp.StatusCode, body)
	}

	upload := func(target, exit int, arch, content string) int {
		t.Helper()
		q := url.Values{"target": {itoa(target)}, "startTime": {"1700000000"}, "endTime": {"1700000060"},
			"arch": {arch}, "exitCode": {itoa(exit)}}
		resp, body := do(t, ts, "POST", "/api/v1/logs?"+q.Encode(), testKey, strings.NewReader(content))
		if resp.StatusCode != 200 {
			t.Fatalf("upload: %d %s", resp.StatusCode, body)
		}
		var id int
		decode(t, body, &id)
		return id
	}
	id1 := upload(1, 0, "x86_64", "first log\n")
	id2 := upload(2, 1, "x86_64", "second log\n")
	id3 := upload(1, 2, "aarch64", "")
	if id1 != 1 || id2 != 2 || id3 != 3 {
		t.Fatalf("ids %d %d %d", id1, id2, id3)
	}

	l, ok := s.LogByID(2)
	if !ok || string(l.Content) != "second log\n" || l.ExitCode != 1 || l.TargetID != 2 || l.StartTime.Unix() != 1700000000 || l.EndTime.Unix() != 1700000060 {
		t.Errorf("LogByID(2) = %+v", l)
	}

	listIDs := func(q string) []int {
		t.Helper()
		resp, body := do(t, ts, "GET", "/api/v1/logs"+q, testKey, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("list %s: %d", q, resp.StatusCode)
		}
		var ls []Log
		decode(t, body, &ls)
		ids := []int{}
		for _, l := range ls {
			ids = append(ids, l.ID)
		}
		sort.Ints(ids)
		return ids
	}
	for q, want := range map[string][]int{
		"":                  {1, 2, 3},
		"?target=1":         {1, 3},
		"?arch=aarch64":     {3},
		"?exit_codes=0,2":   {1, 3},
		"?limit=1&offset=1": {2},
		"?offset=9":         {},
	} {
		if d := cmp.Diff(want, listIDs(q)); d != "" {
			t.Errorf("list %q (-want +got):\n%s", q, d)
		}
	}
	_, body = do(t, ts, "GET", "/api/v1/logs/1/content", testKey, nil)
	if string(body) != "first log\n" {
		t.Errorf("content %q", body)
	}
	var one map[string]any
	_, body = do(t, ts, "GET", "/api/v1/logs/2", testKey, nil)
	decode(t, body, &one)
	if one["target_id"] != 2.0 || one["exit_code"] != 1.0 || one["arch"] != "x86_64" {
		t.Errorf("log 2: %v", one)
	}
	if resp, _ := do(t, ts, "GET", "/api/v1/logs/42", testKey, nil); resp.StatusCode != 404 {
		t.Errorf("missing log: %d, want 404", resp.StatusCode)
	}
	if got := readFile(t, s.LogPath(1)); got != "first log\n" {
		t.Errorf("log file %q", got)
	}
	if resp, _ := do(t, ts, "DELETE", "/api/v1/logs/1", testKey, nil); resp.StatusCode != 200 {
		t.Errorf("delete: %d", resp.StatusCode)
	}
	if _, ok := s.LogByID(1); ok {
		t.Error("deleted log still there")
	}
}
