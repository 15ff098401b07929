package builder_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
	}
	code := m.Run()
	if gates.ts != nil {
		gates.ts.Close()
	}
	os.Exit(code)
}

// env is what a builder test needs: a data directory with an image store,
// a sandbox manager and the builder Manager, like the agent's.
type env struct {
	dir   string
	store *oci.Store
	sb    *sandbox.Manager
	m     *builder.Manager
	opts  []builder.Option
}

var cgroupSeq atomic.Int64

// newEnv opens a store, a sandbox manager and a builder Manager on a new
// data directory; they are closed when the test ends.
func newEnv(t testing.TB, opts ...builder.Option) *env {
	t.Helper()
	testkit.RequireRoot(t)
	// Setups reach the tests' gates (one forwarded server; the network is
	// isolated); an option of opts may widen that.
	e := &env{dir: sandboxtest.Dir(t), opts: append([]builder.Option{gateNetwork()}, opts...)}
	var err error
	if e.store, err = oci.NewStore(filepath.Join(e.dir, "images"), oci.WithSync(false)); err != nil {
		t.Fatal(err)
	}
	parent := fmt.Sprintf("vagent-buildertest-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	if e.sb, err = sandbox.New(filepath.Join(e.dir, "sandbox"), sandbox.WithSeccomp(sandbox.SeccompSupported), sandbox.WithCgroupParent(parent)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.sb.Close(); err != nil {
			t.Errorf("closing the sandbox manager: %v", err)
		}
	})
	e.m = e.open(t)
	return e
}

// open opens another builder Manager on the env's directory (as a restarted
// agent would), closed when the test ends.
func (e *env) open(t testing.TB, extra ...builder.Option) *builder.Manager {
	t.Helper()
	m, err := builder.New(e.store, e.sb, filepath.Join(e.dir, "builders"), append(append([]builder.Option(nil), e.opts...), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// fakePacman stands in for pacman in the busybox base: it prints its
// arguments, fails when /etc/fake-pacman/fail exists, sleeps when
// /etc/fake-pacman/slow exists, waits for a gate (see newGate) when
// /etc/fake-pacman/gate holds its URL, leaves a sparse file /opt/huge of
// the size /etc/fake-pacman/sparse holds (as a hostile base image's pacman
// could), and otherwise "installs" each package as
// a file and changes the tree the way an upgrade does (a file changed, a
// directory deleted, a directory replaced, hardlinks, a symlink, a fifo).
const fakePacman = `#!/bin/sh
echo "fake pacman: $*"
if [ -e /etc/fake-pacman/fail ]; then
	echo "error: target not found: $(cat /etc/fake-pacman/fail)" >&2
	exit 1
fi
if [ -e /etc/fake-pacman/slow ]; then sleep "$(cat /etc/fake-pacman/slow)"; fi
if [ -e /etc/fake-pacman/gate ]; then
	g=$(cat /etc/fake-pacman/gate)
	wget -q -O /dev/null "$g/started" || exit 1
	until wget -q -O /dev/null "$g/open"; do sleep 0.05; done
fi
if [ -e /etc/fake-pacman/sparse ]; then
	dd if=/dev/zero of=/opt/huge bs=1 count=0 seek="$(cat /etc/fake-pacman/sparse)" 2>/dev/null || exit 1
	echo "left a sparse file of $(stat -c %s /opt/huge) bytes"
fi
mkdir -p /usr/share/fake-pacman
for a in "$@"; do
	case "$a" in -*) ;; *) echo "installed $a" >"/usr/share/fake-pacman/$a" ;; esac
done
echo "upgraded" >>/opt/changed
chmod 0600 /opt/changed
rm -rf /opt/old
rm -rf /opt/replaced
mkdir /opt/replaced
echo new >/opt/replaced/new
echo data >/opt/hl1
ln /opt/hl1 /opt/hl2
ln -s ../hl1 /opt/replaced/link
mkfifo /opt/fifo
date >>/var/log/pacman.log
`

// fakePacmanConf answers like pacman 7's pacman-conf when
// /etc/fake-pacman/v7 exists, like pacman 6's otherwise.
const fakePacmanConf = `#!/bin/sh
if [ -e /etc/fake-pacman/v7 ]; then
	if [ "$1" = DisableSandbox ] && grep -qx DisableSandbox /etc/pacman.conf; then
		echo DisableSandboxFilesystem
		echo DisableSandboxSyscalls
	fi
	exit 0
fi
echo "warning: unknown directive '$1'" >&2
exit 1
`

const fakePacmanConfFile = "[options]\nArchitecture = auto\n\n[core]\nInclude = /etc/pacman.d/mirrorlist\n"

type tarEntry struct {
	name, body string
	mode       int64
	dir        bool
}

func tarBytes(t testing.TB, ents ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg, Size: int64(len(e.body))}
		if e.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fakeBase returns the busybox image with a fake pacman; flags are files
// to create under /etc/fake-pacman ("v7", "fail", "slow") with contents,
// except "pacman.conf", the image's /etc/pacman.conf (default
// fakePacmanConfFile).
func fakeBase(t testing.TB, flags map[string]string) v1.Image {
	t.Helper()
	conf := fakePacmanConfFile
	if c, ok := flags["pacman.conf"]; ok {
		conf = c
		flags = maps.Clone(flags)
		delete(flags, "pacman.conf")
	}
	bb, err := testkit.BusyboxImage()
	if err != nil {
		testkit.Unavailable(t, "busybox image: %v", err)
	}
	ents := []tarEntry{
		{name: "usr/", dir: true, mode: 0o755},
		{name: "usr/bin/", dir: true, mode: 0o755},
		{name: "usr/bin/pacman", body: fakePacman, mode: 0o755},
		{name: "usr/bin/pacman-conf", body: fakePacmanConf, mode: 0o755},
		{name: "etc/", dir: true, mode: 0o755},
		{name: "etc/pacman.conf", body: conf, mode: 0o644},
		{name: "etc/fake-pacman/", dir: true, mode: 0o755},
		{name: "opt/", dir: true, mode: 0o755},
		{name: "opt/changed", body: "v1\n", mode: 0o644},
		{name: "opt/old/", dir: true, mode: 0o755},
		{name: "opt/old/a", body: "a\n", mode: 0o644},
		{name: "opt/replaced/", dir: true, mode: 0o755},
		{name: "opt/replaced/x", body: "x\n", mode: 0o644},
		{name: "var/", dir: true, mode: 0o755},
		{name: "var/log/", dir: true, mode: 0o755},
		{name: "var/cache/", dir: true, mode: 0o755},
		{name: "var/cache/pacman/", dir: true, mode: 0o755},
		{name: "var/cache/pacman/pkg/", dir: true, mode: 0o755},
		{name: "var/cache/pacman/pkg/old-1-1-any.pkg.tar.zst", body: "cached", mode: 0o644},
	}
	for k, v := range flags {
		ents = append(ents, tarEntry{name: "etc/fake-pacman/" + k, body: v, mode: 0o644})
	}
	b := tarBytes(t, ents...)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(bb, layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// startRegistry starts a local registry for the test (testkit starts it
// from a thread that outlives the sandbox's retired threads).
func startRegistry(t testing.TB) *testkit.Registry {
	t.Helper()
	return testkit.StartTestRegistry(t)
}

// pushed pushes img to reg as repo:latest and returns the reference.
func pushed(t testing.TB, reg *testkit.Registry, repo string, img v1.Image) string {
	t.Helper()
	ref := reg.Host() + "/test/" + repo + ":latest"
	if err := testkit.Push(t.Context(), img, ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// gate lets a test hold fake pacman's setup at a known point instead of
// guessing how long it takes: a setup whose base has the flag "gate" (the
// gate's URL) reports that it started, then waits until the test opens
// the gate. Gates are paths of one server on the host's loopback, which
// every env's setups reach through a forward (gateNetwork).
type gate struct {
	url     string
	mu      sync.Mutex
	open    bool
	started int
	changed chan struct{} // closed and replaced at every start
}

// gates is the server of every gate.
var gates struct {
	once sync.Once
	ts   *httptest.Server
	mu   sync.Mutex
	byID map[string]*gate
	n    int
}

func gateServer() *httptest.Server {
	gates.once.Do(func() {
		gates.byID = map[string]*gate{}
		gates.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			gates.mu.Lock()
			g := gates.byID[id]
			gates.mu.Unlock()
			if g == nil {
				http.NotFound(w, r)
				return
			}
			g.serve(w, "/"+rest)
		}))
	})
	return gates.ts
}

// gateNetwork is the network of the tests' setups: isolated, reaching the
// gate server.
func gateNetwork() builder.Option {
	return builder.WithNetwork(sandbox.NetworkIsolated, strings.TrimPrefix(gateServer().URL, "http://"))
}

// newGate starts a gate, closed when open is false, for the test's life.
func newGate(t testing.TB, open bool) *gate {
	t.Helper()
	g := &gate{open: open, changed: make(chan struct{})}
	ts := gateServer()
	gates.mu.Lock()
	gates.n++
	id := fmt.Sprintf("g%d", gates.n)
	gates.byID[id] = g
	gates.mu.Unlock()
	t.Cleanup(func() {
		g.set(true) // let a setup still waiting finish
		gates.mu.Lock()
		delete(gates.byID, id)
		gates.mu.Unlock()
	})
	g.url = ts.URL + "/" + id
	return g
}

func (g *gate) serve(w http.ResponseWriter, path string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch path {
	case "/started":
		g.started++
		close(g.changed)
		g.changed = make(chan struct{})
	case "/open":
		if !g.open {
			http.Error(w, "closed", http.StatusNotFound)
		}
	default:
		http.Error(w, "no such gate path", http.StatusNotFound)
	}
}

// set opens or closes the gate.
func (g *gate) set(open bool) {
	g.mu.Lock()
	g.open = open
	g.mu.Unlock()
}

// waitStarted waits until n setups have reported their start.
func (g *gate) waitStarted(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		g.mu.Lock()
		got, ch := g.started, g.changed
		g.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d setups started at the gate, want %d", got, n)
		}
	}
}

// startedCount is the number of setups that reported their start.
func (g *gate) startedCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started
}

// acquireUnblocked acquires base with m, failing the test when that does
// not return within a minute: with a gate closed, an Acquire that waits
// for the held setup never returns.
func acquireUnblocked(t testing.TB, m *builder.Manager, base string, log io.Writer) *builder.Lease {
	t.Helper()
	type result struct {
		l   *builder.Lease
		err error
	}
	ch := make(chan result, 1)
	go func() {
		l, err := m.Acquire(t.Context(), base, log)
		ch <- result{l, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Acquire %s: %v", base, r.err)
		}
		return r.l
	case <-time.After(time.Minute):
		t.Fatalf("Acquire %s is blocked behind a setup held at the gate", base)
		return nil
	}
}

// clock is a settable clock for expiry tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// readFile reads a file of a builder rootfs.
func readFile(t testing.TB, rootfs, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rootfs, p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// builderIDs lists the builder directories on disk.
func builderIDs(t testing.TB, e *env) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.dir, "builders", "b"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range ents {
		ids = append(ids, x.Name())
	}
	return ids
}

func run(ctx context.Context, sb *sandbox.Manager, lower string, uid uint32, args ...string) (string, int, error) {
	var out bytes.Buffer
	res, err := sb.Run(ctx, sandbox.Spec{
		Lower: lower, Args: args, UID: uid, GID: uid, Output: &out,
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/build"},
	})
	if err != nil {
		return "", 0, err
	}
	return strings.TrimSpace(out.String()), res.ExitCode, nil
}
