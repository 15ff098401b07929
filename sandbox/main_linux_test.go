package sandbox_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}

// needRoot skips tests that need host root.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (user namespaces with an id range, overlayfs, cgroups); CI runs as root")
	}
}

// newManager returns a Manager on a fresh data directory, closed when the
// test ends.
func newManager(t testing.TB, opts ...sandbox.Option) (*sandbox.Manager, string) {
	t.Helper()
	needRoot(t)
	dir := sandboxtest.Dir(t)
	opts = append([]sandbox.Option{sandbox.WithSeccomp(sandbox.SeccompSupported)}, opts...)
	m, err := sandbox.New(dir, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m, dir
}

// syncBuffer is an io.Writer safe for the copier and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var pathEnv = []string{"PATH=/bin:/usr/bin", "HOME=/root"}

// sh runs a shell script in rootfs and returns the result and its output.
func sh(t testing.TB, m *sandbox.Manager, rootfs, script string, mod ...func(*sandbox.Spec)) (*sandbox.Result, string) {
	t.Helper()
	var out syncBuffer
	spec := sandbox.Spec{Lower: rootfs, Args: []string{"/bin/sh", "-c", script}, Env: pathEnv, Output: &out}
	for _, f := range mod {
		f(&spec)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	res, err := m.Run(ctx, spec)
	if err != nil {
		t.Fatalf("Run(%q): %v", script, err)
	}
	return res, out.String()
}

func TestSmoke(t *testing.T) {
	m, _ := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, m, rootfs, "echo hello; id; exit 3")
	t.Logf("res=%+v out=%q", res, out)
	if res.ExitCode != 3 || !strings.Contains(out, "hello") {
		t.Fatalf("got %+v %q", res, out)
	}
}
