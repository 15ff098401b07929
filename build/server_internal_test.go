package build

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
)

// testBuilder returns a Builder that only talks to a server.
func testBuilder(t *testing.T, address, key string) *Builder {
	t.Helper()
	o := defaultOptions()
	for _, opt := range []Option{WithServer(address, key), WithRetry(6, time.Millisecond), WithArch("x86_64")} {
		if err := opt(o); err != nil {
			t.Fatal(err)
		}
	}
	return &Builder{opts: o}
}

// packageFile writes a package made by vieterserver.MakePackage and
// returns an opener for it.
func packageFile(t *testing.T, name, version string) func() (*os.File, error) {
	t.Helper()
	data, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: name, Version: version, Arch: "any"}, map[string]string{"usr/share/x": "x\n"}, vieterserver.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name+"-"+version+"-any.pkg.tar.zst")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return func() (*os.File, error) { return os.Open(p) }
}

func TestPublishRetriesTransientFaults(t *testing.T) {
	srv, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey("k"), vieterserver.WithFaults(vieterserver.FaultConfig{
		Rate: 0.4, Seed: 7, Kinds: []vieterserver.Fault{vieterserver.Fault5xx, vieterserver.FaultDrop}, Routes: []string{vieterserver.RoutePublish},
	}))
	b := testBuilder(t, ts.URL, "k")
	for _, name := range []string{"a", "b", "c", "d"} {
		if err := b.publish(t.Context(), "bur", packageFile(t, name, "1-1")); err != nil {
			t.Fatalf("publish %s: %v", name, err)
		}
	}
	if n := len(srv.Packages("bur", "x86_64")); n != 4 {
		t.Errorf("%d packages in the repository, want 4", n)
	}
	faults := srv.Faults()
	if faults[vieterserver.Fault5xx]+faults[vieterserver.FaultDrop] == 0 {
		t.Errorf("no fault was injected (%v): the test proves nothing", faults)
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
		w.Write([]byte(`{"message":"","data":""}`))
	}))
	defer ts.Close()
	open := packageFile(t, "a", "1-1")
	f, _ := open()
	fi, _ := f.Stat()
	f.Close()
	if err := testBuilder(t, ts.URL+"/", "the-key").publish(t.Context(), "bur", open); err != nil {
		t.Fatal(err)
	}
	if got.length != fi.Size() || got.chunked || got.key != "the-key" || got.path != "/bur/publish" {
		t.Errorf("request: %+v, want Content-Length %d, not chunked, the key, /bur/publish", got, fi.Size())
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
		{"unauthorized", 401, "", "server answered 401", ErrUnauthorized},
		{"forbidden", 403, "nope", "server answered 403: nope", ErrUnauthorized},
		{"bad package", 400, `{"message":"Invalid package.\nx","data":""}`, "server answered 400: Invalid package. x", nil},
		{"no length", 411, "<html>Length Required</html>", "server answered 411: <html>Length Required</html>", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer ts.Close()
			err := testBuilder(t, ts.URL, "k").publish(t.Context(), "bur", packageFile(t, "a", "1-1"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if n.Load() != 1 {
				t.Errorf("%d requests: a permanent error was retried", n.Load())
			}
		})
	}
}

func TestPublishGivesUp(t *testing.T) {
	var n atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(503)
	}))
	defer ts.Close()
	err := testBuilder(t, ts.URL, "k").publish(t.Context(), "bur", packageFile(t, "a", "1-1"))
	if err == nil || !strings.Contains(err.Error(), "503") || n.Load() != 6 {
		t.Errorf("error %v after %d requests, want a 503 after 6", err, n.Load())
	}
}

func TestExists(t *testing.T) {
	srv, ts := vieterserver.NewTest(t, vieterserver.WithFaults(vieterserver.FaultConfig{Rate: 0.5, Seed: 3, Kinds: []vieterserver.Fault{vieterserver.Fault5xx}}))
	data, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "e", Version: "2:1.0-1", Arch: "x86_64"}, nil, vieterserver.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Publish("bur", data); err != nil {
		t.Fatal(err)
	}
	b := testBuilder(t, ts.URL, "k")
	for file, want := range map[string]bool{"e-2:1.0-1": true, "e-1.0-1": false, "bur.db": true, "e-2:1.0-2": false, "other.db": false} {
		got, err := b.exists(t.Context(), "bur", file)
		if err != nil || got != want {
			t.Errorf("exists(%s) = %v, %v; want %v", file, got, err, want)
		}
	}
	if srv.Faults()[vieterserver.Fault5xx] == 0 {
		t.Error("no fault injected")
	}
}
