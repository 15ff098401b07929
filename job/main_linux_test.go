package job_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
	"github.com/vieter-v/vagent/vieter"
)

func TestMain(m *testing.M) {
	code := m.Run()
	shared.close()
	if fixtures.ts != nil {
		fixtures.ts.Close()
	}
	os.Exit(code)
}

const apiKey = "secret-api-key-0123456789"

// env is what the end-to-end tests share: one sandbox Manager, one image
// store and builder Manager, a local registry with the Arch-like image,
// and one Vieter test server that also serves the "deps" repository with
// the base-devel and git meta-packages every builder installs. They live
// as long as the test binary: builders have the server's address in their
// pacman.conf.
type env struct {
	dir    string
	sb     *sandbox.Manager
	store  *oci.Store
	bm     *builder.Manager
	images job.Images
	reg    *testkit.Registry
	srv    *vieterserver.Server
	ts     *httptest.Server
	base   string // the Arch-like base image in the local registry
}

type sharedEnv struct {
	once sync.Once
	e    *env
	err  error
	skip string
}

var shared sharedEnv

func (s *sharedEnv) close() {
	if s.e == nil {
		return
	}
	e := s.e
	if e.bm != nil {
		e.bm.Close()
	}
	if e.sb != nil {
		e.sb.Close()
	}
	if e.ts != nil {
		e.ts.Close()
	}
	if e.reg != nil {
		e.reg.Close()
	}
	os.RemoveAll(e.dir)
}

// setup returns the shared environment, creating it on first use. It skips
// the test (fails it in CI) without root or the test image.
func setup(t testing.TB) *env {
	t.Helper()
	testkit.RequireRoot(t)
	shared.once.Do(func() { shared.e, shared.skip, shared.err = newEnv() })
	if shared.skip != "" {
		testkit.Unavailable(t, "%s", shared.skip)
		t.SkipNow()
	}
	if shared.err != nil {
		t.Fatalf("test environment: %v", shared.err)
	}
	return shared.e
}

func newEnv() (e *env, skip string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	e = &env{}
	if e.dir, err = os.MkdirTemp("", "vagent-build-test-"); err != nil {
		return nil, "", err
	}
	if err := os.Chmod(e.dir, 0o755); err != nil {
		return nil, "", err
	}
	if _, err := exec.LookPath(testkit.RegistryBinary); err != nil {
		return e, "needs docker-registry (Debian package docker-registry)", nil
	}
	img, _, err := testkit.ArchLikeImage(ctx)
	if err != nil {
		if errors.Is(err, testkit.ErrToolMissing) || errors.Is(err, testkit.ErrNoMirror) {
			return e, fmt.Sprintf("Arch-like test image unavailable: %v", err), nil
		}
		return e, "", fmt.Errorf("arch-like image: %w", err)
	}
	if e.reg, err = testkit.StartRegistry(ctx, filepath.Join(e.dir, "registry")); err != nil {
		return e, "", err
	}
	e.base = e.reg.Host() + "/test/archlike:latest"
	if err := testkit.Push(ctx, img, e.base); err != nil {
		return e, "", err
	}
	if e.srv, err = vieterserver.New(vieterserver.WithAPIKey(apiKey)); err != nil {
		return e, "", err
	}
	e.ts = httptest.NewServer(e.srv)
	if err := e.srv.PublishMetaPackages("deps", "base-devel", "git"); err != nil {
		return e, "", err
	}
	if e.sb, err = sandbox.New(filepath.Join(e.dir, "sandbox"), sandbox.WithSeccomp(sandbox.SeccompSupported)); err != nil {
		return e, "", err
	}
	if e.store, err = oci.NewStore(filepath.Join(e.dir, "images"), oci.WithSync(false)); err != nil {
		return e, "", err
	}
	e.bm, err = builder.New(e.store, e.sb, filepath.Join(e.dir, "builders"),
		builder.WithRepos(pacman.Repo{Name: "deps", Servers: []string{e.ts.URL + "/$repo/$arch"}, SigLevel: "Optional TrustAll"}))
	if err != nil {
		return e, "", err
	}
	e.images = job.BuilderImages(e.bm)
	return e, "", nil
}

// warmBuilder prepares the builder of e.base unless it is ready, and
// releases it.
func warmBuilder(t testing.TB, e *env) {
	t.Helper()
	var log sandboxtest.Buffer
	_, release, err := e.images.Acquire(t.Context(), e.base, &log)
	if err != nil {
		t.Fatalf("preparing the builder: %v\n%s", err, log.String())
	}
	release()
}

var repoSeq struct {
	sync.Mutex
	n int
}

// newRepo returns a repository name no other test uses.
func newRepo() string {
	repoSeq.Lock()
	defer repoSeq.Unlock()
	repoSeq.n++
	return fmt.Sprintf("repo%d", repoSeq.n)
}

// newBuilder returns a Runner on a fresh directory that publishes to the
// shared server, its builds reaching the fixture server (netOpt; an option
// of opts may widen that).
func newBuilder(t testing.TB, e *env, opts ...job.Option) *job.Runner {
	t.Helper()
	opts = append([]job.Option{job.WithServer(serverClient(t, e.ts.URL)), job.WithArch("x86_64"), job.WithRetry(3, 10*time.Millisecond), netOpt()}, opts...)
	b, err := job.New(e.sb, e.images, filepath.Join(sandboxtest.Dir(t), "build"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serverClient returns a client of the test server at address.
func serverClient(t testing.TB, address string) *vieter.Client {
	t.Helper()
	c, err := vieter.NewClient(address, apiKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// result is how a job ended, as poll.RunJob reports it, and what the
// build produced.
type result struct {
	poll.Report
	job.Built
}

// build runs j with b from above, as `vagent build` and an agent's slot
// do: poll.RunJob owns the deadline (the job's timeout or
// poll.DefaultTimeout), the log limit (logLimit, 0 for none) and the
// footer; b.Run builds, from srcDir when it is not "".
func build(ctx context.Context, b *job.Runner, j poll.Job, srcDir string, logLimit int64, log io.Writer) result {
	var built *job.Built
	rep := poll.RunJob(ctx, poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) {
		var (
			out poll.Outcome
			err error
		)
		built, out, err = b.Run(ctx, j, srcDir, log)
		return out, err
	}), j, poll.DefaultTimeout, logLimit, log)
	r := result{Report: rep}
	if built != nil {
		r.Built = *built
	}
	return r
}

// runJob builds job and returns the result and the log.
func runJob(t testing.TB, b *job.Runner, j poll.Job) (result, string) {
	t.Helper()
	return runJobLimited(t, b, j, poll.DefaultLogLimit)
}

// runJobLimited is runJob with a log limit of logLimit bytes.
func runJobLimited(t testing.TB, b *job.Runner, j poll.Job, logLimit int64) (result, string) {
	t.Helper()
	var log sandboxtest.Buffer
	r := build(t.Context(), b, j, "", logLimit, &log)
	t.Logf("%s: %s (exit %d) in %s", poll.RedactURL(j.URL), r.Reason, r.ExitCode, r.End.Sub(r.Start).Round(time.Millisecond))
	return r, log.String()
}

// wantStatus fails t unless r has the status and exit code.
func wantStatus(t testing.TB, r result, log string, status poll.Result, code int) {
	t.Helper()
	if r.Result != status || r.ExitCode != code {
		t.Fatalf("status %s exit %d (%s), want %s exit %d; log:\n%s", r.Result, r.ExitCode, r.Reason, status, code, log)
	}
}

// lastLine returns the last non-empty line of a log.
func lastLine(log string) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	return lines[len(lines)-1]
}

// pkgbuild returns a PKGBUILD for a package without dependencies on the
// system (the Arch-like image's pacman database is empty). extra lines go
// after pkgrel.
func pkgbuild(name, ver, rel string, extra ...string) string {
	return fmt.Sprintf(`pkgname=%s
pkgver=%s
pkgrel=%s
%s
pkgdesc="vagent test package"
arch=(any)
license=(MIT)
build() { echo "building $pkgname"; }
package() {
	mkdir -p "$pkgdir/usr/share/$pkgname"
	echo "$pkgver" >"$pkgdir/usr/share/$pkgname/version"
}
`, name, ver, rel, strings.Join(extra, "\n"))
}

// fixtures serves the tests' PKGBUILDs and handlers on one loopback port,
// which every Runner of the tests forwards into its builds (netOpt): on
// the isolated network, a build reaches no other server of the host.
var fixtures struct {
	once sync.Once
	ts   *httptest.Server
	mu   sync.Mutex
	h    map[string]http.Handler // path prefix -> handler
	n    int
}

func fixtureServer() *httptest.Server {
	fixtures.once.Do(func() {
		fixtures.h = map[string]http.Handler{}
		fixtures.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)
			fixtures.mu.Lock()
			h := fixtures.h["/"+parts[0]]
			fixtures.mu.Unlock()
			if h == nil {
				http.NotFound(w, r)
				return
			}
			http.StripPrefix("/"+parts[0], h).ServeHTTP(w, r)
		}))
	})
	return fixtures.ts
}

// serveHandler serves h below a new path of the fixture server until the
// test ends and returns that path's URL (h sees the paths below it).
func serveHandler(t testing.TB, h http.Handler) string {
	t.Helper()
	ts := fixtureServer()
	fixtures.mu.Lock()
	fixtures.n++
	prefix := fmt.Sprintf("/t%d", fixtures.n)
	fixtures.h[prefix] = h
	fixtures.mu.Unlock()
	t.Cleanup(func() {
		fixtures.mu.Lock()
		delete(fixtures.h, prefix)
		fixtures.mu.Unlock()
	})
	return ts.URL + prefix
}

// serveFile serves content at .../PKGBUILD on the fixture server and
// returns its URL.
func serveFile(t testing.TB, content string) string {
	t.Helper()
	return serveHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/PKGBUILD" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(content))
	})) + "/PKGBUILD"
}

// netOpt is the network of the tests' builds: isolated, reaching the
// fixture server and the servers of urls (a git server of the test).
func netOpt(urls ...string) job.Option {
	fwd := []string{strings.TrimPrefix(fixtureServer().URL, "http://")}
	for _, u := range urls {
		if ep, ok := sandbox.URLEndpoint(u); ok {
			fwd = append(fwd, ep)
		}
	}
	return job.WithNetwork(sandbox.NetworkIsolated, fwd...)
}
