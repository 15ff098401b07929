package vieterserver

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestWireLikeVieter pins the framing of every kind of answer to Vieter
// 0.6.0's: JSON and status-only answers without Content-Length or
// chunking, the connection closed after each answer, empty bodies for
// status-only answers, canned text errors with a length.
func TestWireLikeVieter(t *testing.T) {
	s, ts := newServer(t)
	id := s.AddTarget(Target{URL: "https://example.org/a.git", Repo: "bur"})
	pkg := mustPackage(t, "wire", "1.0-1", "x86_64", Zstd)
	type want struct {
		status  int
		length  bool   // a Content-Length is sent
		ctype   string // "" for none
		body    string // exact, or a prefix ending in "*"
		noFrame bool
	}
	tests := []struct {
		name, method, path string
		body               []byte
		want               want
	}{
		{"poll", "GET", "/api/v1/jobs/poll?arch=x86_64&max=1", nil, want{200, false, "application/json", `{"message":"","data":[]}`, false}},
		{"poll 400", "GET", "/api/v1/jobs/poll?max=1", nil, want{400, false, "application/json", `{"message":"Missing arch query arg.","data":""}`, false}},
		{"queue", "POST", "/api/v1/jobs/queue?target=1&arch=x86_64", nil, want{200, false, "", "", false}},
		{"queue unknown", "POST", "/api/v1/jobs/queue?target=9&arch=x86_64", nil, want{400, false, "application/json", `{"message":"Unknown target id.","data":""}`, false}},
		{"log", "POST", "/api/v1/logs?target=1&startTime=1&endTime=2&arch=x86_64&exitCode=0", []byte("log"), want{200, false, "application/json", `{"message":"","data":1}`, false}},
		{"log chunked", "POST", "/api/v1/logs?target=1&startTime=1&endTime=2&arch=x86_64&exitCode=0", nil, want{411, false, "", "", true}},
		{"publish", "POST", "/bur/publish", pkg, want{200, false, "application/json", `{"message":"","data":{"name":"wire","version":"1.0-1","archs":["x86_64"]}}`, false}},
		{"publish garbage", "POST", "/bur/publish", []byte("garbage"), want{500, false, "", "", false}},
		{"version check", "GET", "/bur/x86_64/wire-1.0-1", nil, want{200, true, "text/plain; charset=utf-8", "%FILENAME%*", false}},
		{"version absent", "GET", "/bur/x86_64/wire-9-1", nil, want{404, false, "", "", false}},
		{"no route", "GET", "/api/v1/nothing/here/at/all", nil, want{404, true, "text/plain", "404 Not Found", false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != nil {
				body = bytes.NewReader(tt.body)
			}
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, ts.URL+tt.path, body)
			if tt.want.noFrame {
				req.Body = io.NopCloser(strings.NewReader("chunked"))
				req.ContentLength = -1
			}
			req.Header.Set("X-Api-Key", testKey)
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			w := tt.want
			if resp.StatusCode != w.status {
				t.Errorf("status %d, want %d", resp.StatusCode, w.status)
			}
			if !resp.Close {
				t.Error("no Connection: close")
			}
			if len(resp.TransferEncoding) != 0 {
				t.Errorf("transfer encoding %v, want none", resp.TransferEncoding)
			}
			if (resp.ContentLength >= 0) != w.length {
				t.Errorf("Content-Length %d, want one: %v", resp.ContentLength, w.length)
			}
			if got := resp.Header.Get("Content-Type"); got != w.ctype {
				t.Errorf("Content-Type %q, want %q", got, w.ctype)
			}
			if p, ok := strings.CutSuffix(w.body, "*"); ok {
				if !strings.HasPrefix(string(b), p) {
					t.Errorf("body %q, want it to start with %q", b, p)
				}
			} else if string(b) != w.body {
				t.Errorf("body %q, want %q", b, w.body)
			}
		})
	}
	if q := s.Queued("x86_64"); len(q) != 1 || q[0].TargetID != id {
		t.Errorf("queued %v", q)
	}
}

// TestFaultDropAfterTakesEffect: the answer is lost but the request took
// effect — the fault a non-idempotent call must survive.
func TestFaultDropAfterTakesEffect(t *testing.T) {
	s, ts := newServer(t, WithFaults(FaultConfig{Rate: 1, Seed: 1, Kinds: []Fault{FaultDropAfter}, Routes: []string{RouteQueue, RoutePoll}}))
	id := s.AddTarget(Target{URL: "u", Repo: "bur"})
	cut, empty := 0, 0
	for range 20 {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", ts.URL+"/api/v1/jobs/queue?target=1&arch=x86_64", nil)
		req.Header.Set("X-Api-Key", testKey)
		resp, err := ts.Client().Do(req)
		if err != nil {
			cut++ // nothing came back
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && len(b) == 0 {
			empty++ // headers, then half of an empty body: looks like success
		}
	}
	if q := s.Queued("x86_64"); len(q) != 20 || q[0].TargetID != id {
		t.Errorf("%d jobs queued, want 20: every request took effect", len(q))
	}
	if cut == 0 || empty == 0 || cut+empty != 20 {
		t.Errorf("%d cut, %d answered: want both kinds", cut, empty)
	}
	// A JSON answer cut in half: the client reads a truncated body to EOF.
	truncated := 0
	for range 10 {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/api/v1/jobs/poll?arch=x86_64&max=1", nil)
		req.Header.Set("X-Api-Key", testKey)
		resp, err := ts.Client().Do(req)
		if err != nil {
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && len(b) > 0 && !bytes.HasSuffix(b, []byte("}")) {
			truncated++
		}
	}
	if truncated == 0 {
		t.Error("no truncated JSON answer seen")
	}
	if n := len(s.Queued("x86_64")); n != 10 {
		t.Errorf("%d jobs left after 10 polls of one, want 10: every poll popped", n)
	}
	if f := s.Faults()[FaultDropAfter]; f != 30 {
		t.Errorf("%d faults, want 30", f)
	}
}
