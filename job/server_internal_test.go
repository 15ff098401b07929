package job

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/vieter"
)

// testBuilder returns a Runner that only talks to a server, trying each
// request up to attempts times (6 by default).
func testBuilder(t *testing.T, address, key string, attempts ...int) *Runner {
	t.Helper()
	c, err := vieter.NewClient(address, key)
	if err != nil {
		t.Fatal(err)
	}
	o := defaultOptions()
	for _, opt := range []Option{WithServer(c), WithRetry(append(attempts, 6)[0], time.Millisecond), WithArch("x86_64")} {
		if err := opt(o); err != nil {
			t.Fatal(err)
		}
	}
	return &Runner{opts: o}
}

// packageFile writes a package made by vieterserver.MakePackage and
// returns its file name and an opener for it.
func packageFile(t *testing.T, name, version string) (string, func() *os.File) {
	t.Helper()
	data, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: name, Version: version, Arch: "any"}, map[string]string{"usr/share/x": "x\n"}, vieterserver.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	file := name + "-" + version + "-any.pkg.tar.zst"
	p := filepath.Join(t.TempDir(), file)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return file, func() *os.File {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
}

// TestPublishConfirmsThroughFaults: 500s, malformed 200s (nothing stored)
// and answers lost after the package was stored, on publish and on the
// repository check: every package ends up in the repository and the log
// says how each was confirmed.
func TestPublishConfirmsThroughFaults(t *testing.T) {
	srv, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey("k"), vieterserver.WithFaults(vieterserver.FaultConfig{
		Rate: 0.5, Seed: 7, Kinds: []vieterserver.Fault{vieterserver.Fault5xx, vieterserver.FaultMalformedJSON, vieterserver.FaultDropAfter},
		Routes: []string{vieterserver.RoutePublish, vieterserver.RouteRepoFile},
	}))
	b := testBuilder(t, ts.URL, "k")
	var confirmed []string
	b.opts.publishObserver = func(by string) { confirmed = append(confirmed, by) }
	var log strings.Builder
	names := []string{"a", "b", "c", "d", "e", "f"}
	for _, name := range names {
		file, open := packageFile(t, name, "1-1")
		if err := b.publishFile(t.Context(), "bur", file, open(), &log); err != nil {
			t.Fatalf("publish %s: %v\n%s", name, err, log.String())
		}
	}
	if n := len(srv.Packages("bur", "x86_64")); n != len(names) {
		t.Errorf("%d packages in the repository, want %d", n, len(names))
	}
	for _, name := range names {
		if !strings.Contains(log.String(), "vagent: "+name+" 1-1 confirmed in bur (") {
			t.Errorf("no confirmation line for %s in:\n%s", name, log.String())
		}
	}
	byCheck := strings.Count(log.String(), "by the repository")
	if len(confirmed) != len(names) || byCheck == 0 {
		t.Errorf("confirmations %v, %d by check:\n%s", confirmed, byCheck, log.String())
	}
	f := srv.Faults()
	if f[vieterserver.Fault5xx] == 0 || f[vieterserver.FaultMalformedJSON] == 0 || f[vieterserver.FaultDropAfter] == 0 {
		t.Errorf("faults %v: want every kind", f)
	}
}

func TestPublishRequest(t *testing.T) {
	var got struct {
		length  int64
		chunked bool
		key     string
		path    string
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.length, got.chunked, got.key, got.path = r.ContentLength, len(r.TransferEncoding) > 0, r.Header.Get("X-Api-Key"), r.URL.Path
		w.Write([]byte(`{"message":"","data":{"name":"a","version":"1-1","archs":["x86_64"]}}`))
	}))
	defer ts.Close()
	file, open := packageFile(t, "a", "1-1")
	f := open()
	fi, _ := f.Stat()
	var log strings.Builder
	if err := testBuilder(t, ts.URL+"/", "the-key").publishFile(t.Context(), "bur", file, f, &log); err != nil {
		t.Fatal(err)
	}
	if got.length != fi.Size() || got.chunked || got.key != "the-key" || got.path != "/bur/publish" {
		t.Errorf("request: %+v, want Content-Length %d, not chunked, the key, /bur/publish", got, fi.Size())
	}
	if !strings.Contains(log.String(), "a 1-1 confirmed in bur (by the server's answer; 1 attempt(s))") {
		t.Errorf("log:\n%s", log.String())
	}
}

func TestPublishPermanentErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string
		is     error
	}{
		{"unauthorized", 401, "401 Unauthorized", "server answered 401", vieter.ErrUnauthorized},
		{"forbidden", 403, "nope", "server answered 403 Forbidden (check api_key): nope", vieter.ErrUnauthorized},
		{"bad package", 400, `{"message":"Invalid package.\nx","data":""}`, "server answered 400 Bad Request: Invalid package.", nil},
		{"no length", 411, "", "server answered 411 Length Required", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer ts.Close()
			file, open := packageFile(t, "a", "1-1")
			var log strings.Builder
			err := testBuilder(t, ts.URL, "k").publishFile(t.Context(), "bur", file, open(), &log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if n.Load() != 1 {
				t.Errorf("%d requests: a permanent error was retried", n.Load())
			}
			if !strings.Contains(log.String(), "vagent: a 1-1 NOT confirmed in bur after 1 attempt(s)") {
				t.Errorf("log:\n%s", log.String())
			}
		})
	}
}

// TestPublishNeverStored: answers that prove nothing and a repository
// that never has the package: not confirmed, after the attempts.
func TestPublishNeverStored(t *testing.T) {
	var publishes atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			publishes.Add(1)
			w.Write([]byte("<html>proxy says hello</html>"))
			return
		}
		w.WriteHeader(404)
	}))
	defer ts.Close()
	file, open := packageFile(t, "a", "1-1")
	var log strings.Builder
	err := testBuilder(t, ts.URL, "k").publishFile(t.Context(), "bur", file, open(), &log)
	if !errors.Is(err, vieter.ErrNotConfirmed) || publishes.Load() != 6 {
		t.Errorf("error %v after %d publishes, want ErrNotConfirmed after 6", err, publishes.Load())
	}
}

func TestRepositoryChecks(t *testing.T) {
	srv, ts := vieterserver.NewTest(t, vieterserver.WithFaults(vieterserver.FaultConfig{Rate: 0.5, Seed: 3,
		Kinds: []vieterserver.Fault{vieterserver.Fault5xx, vieterserver.FaultMalformedJSON}}))
	data, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "e", Version: "2:1.0-1", Arch: "x86_64"}, nil, vieterserver.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Publish("bur", data); err != nil {
		t.Fatal(err)
	}
	b := testBuilder(t, ts.URL, "k")
	for version, want := range map[string]bool{"2:1.0-1": true, "1.0-1": false, "2:1.0-2": false} {
		got, err := b.hasVersion(t.Context(), "bur", "e", version)
		if err != nil || got != want {
			t.Errorf("hasVersion(e, %s) = %v, %v; want %v", version, got, err, want)
		}
	}
	// A HEAD reads no body: only the 5xx faults apply.
	srv2, ts2 := vieterserver.NewTest(t, vieterserver.WithFaults(vieterserver.FaultConfig{Rate: 0.5, Seed: 3, Kinds: []vieterserver.Fault{vieterserver.Fault5xx}}))
	if _, err := srv2.Publish("bur", data); err != nil {
		t.Fatal(err)
	}
	b2 := testBuilder(t, ts2.URL, "k")
	for file, want := range map[string]bool{"bur.db": true, "other.db": false} {
		got, err := b2.hasFile(t.Context(), "bur", file)
		if err != nil || got != want {
			t.Errorf("hasFile(%s) = %v, %v; want %v", file, got, err, want)
		}
	}
	if srv.Faults()[vieterserver.Fault5xx] == 0 || srv.Faults()[vieterserver.FaultMalformedJSON] == 0 || srv2.Faults()[vieterserver.Fault5xx] == 0 {
		t.Error("no fault injected")
	}
}
