package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// nobody is the uid and gid of the unprivileged user the preflight tests
// run vagent as.
const nobody = 65534

// binaryFor copies the agent binary (agentBinary) where uid may run it
// and returns its path.
func binaryFor(t *testing.T, uid int) string {
	t.Helper()
	dir := sandboxtest.Dir(t) // every user may traverse it
	src, err := os.Open(agentBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "vagent")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// ownedDir returns a new directory owned by uid, which uid can reach.
func ownedDir(t *testing.T, uid int) string {
	t.Helper()
	dir := sandboxtest.Dir(t)
	if err := os.Chown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// asUser runs bin with args as uid and returns its exit status and output.
func asUser(t *testing.T, uid int, bin string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), out.String()
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("vagent %v as uid %d did not end within 2 minutes:\n%s", args, uid, out.String())
		return 0, ""
	}
}

// TestUnprivilegedRefused: as an ordinary user without subordinate ids
// (uid 65534, nobody: rootless mode is not available to it) with a
// reachable server that has queued jobs, `vagent run` exits with status 69
// and the reason before it polls: the queue is unchanged and no log was
// uploaded. `vagent build` exits the same way before it pulls: the
// registry served no blob and the data dir has no image store.
func TestUnprivilegedRefused(t *testing.T) {
	const unprivilegedReason = "rootless mode is not available\n  subordinate ids: user nobody has no entry in /etc/subuid and /etc/subgid: sudo usermod --add-subuids"
	testkit.RequireRoot(t) // to become uid 65534
	testkit.RequireTool(t, testkit.RegistryBinary, "docker-registry")
	bin := binaryFor(t, nobody)
	home := ownedDir(t, nobody)

	srv, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey(testKey))
	const arch = "x86_64"
	for i := range 3 {
		id := srv.AddTarget(vieterserver.Target{Kind: "git", URL: fmt.Sprintf("https://example.org/p%d.git", i), Repo: "core", Arches: []string{arch}})
		if err := srv.Enqueue(id, arch, false); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(home, "agent.yaml")
	data := filepath.Join(home, "data")
	yaml := fmt.Sprintf("address: %s\napi_key: %s\narch: %s\ndata_dir: %s\npolling_frequency: 1\nlog_file: \"-\"\n", ts.URL, testKey, arch, data)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(cfg, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	code, out := asUser(t, nobody, bin, "run", cfg)
	if code != exitUnavailable || !strings.Contains(out, unprivilegedReason) {
		t.Errorf("vagent run as uid 65534: exit %d, want %d with the reason:\n%s", code, exitUnavailable, out)
	}
	if q := srv.Queued(arch); len(q) != 3 {
		t.Errorf("queue after the refused agent: %d jobs, want the 3 queued", len(q))
	}
	if p := srv.Polls(); len(p) != 0 {
		t.Errorf("the refused agent polled: %v", p)
	}
	if l := srv.Logs(); len(l) != 0 {
		t.Errorf("the refused agent uploaded %d logs", len(l))
	}

	// vagent build pulls nothing: the registry is behind a proxy that
	// counts blob requests.
	reg := testkit.StartTestRegistry(t)
	img, err := testkit.BusyboxImage()
	if err != nil {
		testkit.Unavailable(t, "busybox image: %v", err)
	}
	if err := testkit.Push(t.Context(), img, reg.Host()+"/test/base:latest"); err != nil {
		t.Fatal(err)
	}
	blobs := countingProxy(t, reg.URL())
	base := blobs.host + "/test/base:latest"
	blobsBefore := blobs.n.Load()
	src := filepath.Join(home, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "PKGBUILD"), []byte(testPKGBUILD("unpriv", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = asUser(t, nobody, bin, "build", "--data-dir", data, "--base-image", base, "--insecure", blobs.host, "--out", filepath.Join(home, "out"), src)
	if code != exitUnavailable || !strings.Contains(out, unprivilegedReason) {
		t.Errorf("vagent build as uid 65534: exit %d, want %d with the reason:\n%s", code, exitUnavailable, out)
	}
	if n := blobs.n.Load(); n != blobsBefore {
		t.Errorf("the refused build fetched %d blobs", n-blobsBefore)
	}
	if _, err := os.Stat(filepath.Join(data, "images")); !os.IsNotExist(err) {
		t.Errorf("the refused build opened an image store: %v", err)
	}
	// The count is honest: a pull shows in it.
	if code, _, errOut := runCLI("image", "pull", "--data-dir", filepath.Join(home, "control"), "--insecure", blobs.host, base); code != 0 {
		t.Fatalf("control pull: exit %d: %s", code, errOut)
	}
	if n := blobs.n.Load(); n <= blobsBefore {
		t.Errorf("a pull is not seen by the proxy (%d blob requests before, %d after)", blobsBefore, n)
	}
}

// blobCounter is a reverse proxy in front of a registry that counts the
// blob requests it forwards.
type blobCounter struct {
	host string // host:port of the proxy
	n    atomic.Int64
}

func countingProxy(t *testing.T, registryURL string) *blobCounter {
	t.Helper()
	u, err := url.Parse(registryURL)
	if err != nil {
		t.Fatal(err)
	}
	c := &blobCounter{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			c.n.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	c.host = strings.TrimPrefix(ts.URL, "http://")
	return c
}
