package poll

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		transient bool
		unauth    bool
		bad       bool
		inMsg     string
	}{
		{"401 empty", 401, "", false, true, false, "check api_key"},
		{"403 html", 403, "<html>no</html>", false, true, false, "check api_key"},
		{"400 json", 400, `{"message":"Missing arch query arg.","data":""}`, false, false, false, "Missing arch query arg."},
		{"500 html", 500, "<html><body>Internal\x00 error</body></html>", true, false, false, "Internal error"},
		{"502 empty", 502, "", true, false, false, "502 Bad Gateway"},
		{"429", 429, "slow down", true, false, false, "slow down"},
		{"404 text", 404, "not found", false, false, false, "not found"},
		{"200 truncated", 200, `{"message":"","data":[{"target_id":`, true, false, true, "malformed"},
		{"200 html", 200, "<html>proxy login</html>", true, false, true, "proxy login"},
		{"200 wrong data", 200, `{"message":"","data":"nope"}`, true, false, true, "malformed"},
		{"echoes key", 500, "you sent " + testKey, true, false, false, "[redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer ts.Close()
			c, err := NewClient(ts.URL, testKey)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Poll(t.Context(), testArch, 1)
			if err == nil {
				t.Fatal("no error")
			}
			if IsTransient(err) != tt.transient || errors.Is(err, ErrUnauthorized) != tt.unauth || errors.Is(err, ErrBadResponse) != tt.bad {
				t.Errorf("%v: transient=%v unauthorized=%v bad=%v", err, IsTransient(err), errors.Is(err, ErrUnauthorized), errors.Is(err, ErrBadResponse))
			}
			if !strings.Contains(err.Error(), tt.inMsg) || strings.Contains(err.Error(), testKey) {
				t.Errorf("error %q: want %q in it and no key", err, tt.inMsg)
			}
		})
	}
}

func TestClientNetworkErrors(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	}))
	c, _ := NewClient(ts.URL, testKey)
	_, err := c.Poll(t.Context(), testArch, 1)
	if !IsTransient(err) || strings.Contains(err.Error(), testKey) {
		t.Errorf("dropped connection: %v, transient=%v", err, IsTransient(err))
	}
	ts.Close()
	if _, err := c.Poll(t.Context(), testArch, 1); !IsTransient(err) {
		t.Errorf("refused connection: %v not transient", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Poll(ctx, testArch, 1); IsTransient(err) {
		t.Errorf("cancelled ctx: %v must not be transient", err)
	}
	for _, addr := range []string{"", "ftp://x", "http://user:pw@host", "localhost:80"} {
		if _, err := NewClient(addr, testKey); err == nil {
			t.Errorf("NewClient(%q) accepted", addr)
		}
	}
	if _, err := NewClient("http://x", ""); err == nil {
		t.Error("empty key accepted")
	}
}

func TestClientRequests(t *testing.T) {
	type seen struct {
		method, path, query, key string
		length                   int64
		chunked                  bool
		body                     string
	}
	var got []seen
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Api-Key"), r.ContentLength,
			slices.Contains(r.TransferEncoding, "chunked"), string(b)})
		switch r.URL.Path {
		case "/sub/api/v1/logs":
			_, _ = io.WriteString(w, `{"message":"","data":42}`)
		case "/sub/api/v1/jobs/poll":
			_, _ = io.WriteString(w, `{"message":"","data":[{"target_id":3,"kind":"url","url":"u","branch":"b","path":"p","repo":"r","base_image":"i","force":true,"timeout":5}]}`)
		default:
			_, _ = io.WriteString(w, `{"message":"","data":""}`)
		}
	}))
	defer ts.Close()
	c, err := NewClient(ts.URL+"/sub/", testKey)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := c.Poll(t.Context(), "aarch64", 2)
	want := Job{TargetID: 3, Kind: "url", URL: "u", Branch: "b", Path: "p", Repo: "r", BaseImage: "i", Force: true, Timeout: 5}
	if err != nil || len(jobs) != 1 || jobs[0] != want {
		t.Fatalf("Poll = %+v, %v", jobs, err)
	}
	for _, content := range []string{"log line\n", ""} {
		// The log is a section of a larger file, as in the spool.
		r := strings.NewReader("header" + content + "trailer")
		id, err := c.UploadLog(t.Context(), LogParams{TargetID: 3, Start: time.Unix(100, 0), End: time.Unix(160, 0), Arch: "aarch64", ExitCode: 2},
			io.NewSectionReader(r, 6, int64(len(content))))
		if err != nil || id != 42 {
			t.Fatalf("UploadLog = %d, %v", id, err)
		}
	}
	if err := c.Requeue(t.Context(), 3, "aarch64", true); err != nil {
		t.Fatal(err)
	}
	if err := c.Requeue(t.Context(), 4, "aarch64", false); err != nil {
		t.Fatal(err)
	}
	wantSeen := []seen{
		{"GET", "/sub/api/v1/jobs/poll", "arch=aarch64&max=2", testKey, 0, false, ""},
		{"POST", "/sub/api/v1/logs", "arch=aarch64&endTime=160&exitCode=2&startTime=100&target=3", testKey, 9, false, "log line\n"},
		{"POST", "/sub/api/v1/logs", "arch=aarch64&endTime=160&exitCode=2&startTime=100&target=3", testKey, 0, false, ""},
		{"POST", "/sub/api/v1/jobs/queue", "arch=aarch64&force=&target=3", testKey, 0, false, ""},
		{"POST", "/sub/api/v1/jobs/queue", "arch=aarch64&target=4", testKey, 0, false, ""},
	}
	if !slices.Equal(got, wantSeen) {
		t.Errorf("requests:\n got %+v\nwant %+v", got, wantSeen)
	}
}

// FuzzClientAnswer feeds arbitrary answers to Poll: no panic, no key in errors.
func FuzzClientAnswer(f *testing.F) {
	f.Add(200, []byte(`{"message":"","data":[{"target_id":1}]}`))
	f.Add(500, []byte("<html>"))
	f.Add(401, []byte{})
	f.Add(200, []byte(`{"data":null}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			status = 200
		}
		hc := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader(string(body) + testKey[:len(body)%len(testKey)])), Header: http.Header{}, Request: r}, nil
		})}
		c, err := NewClient("http://vieter.test", testKey, WithHTTPClient(hc))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Poll(context.Background(), testArch, 1)
		if err != nil && strings.Contains(err.Error(), testKey) {
			t.Fatalf("key in error %q", err)
		}
	})
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
