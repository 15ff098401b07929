package job_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/vieter"
)

// TestAgentWithBuilder runs the poll loop with the Runner as its
// executor against the test server: the job is polled, built, its package
// published and its complete log uploaded with the exit code.
func TestAgentWithBuilder(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo := newRepo()
	url := serveFile(t, pkgbuild("polled", "1", "1"))
	id := e.srv.AddTarget(vieterserver.Target{Kind: "url", URL: url, Repo: repo, BaseImage: e.base, Arches: []string{"x86_64"}})
	if err := e.srv.Enqueue(id, "x86_64", false); err != nil {
		t.Fatal(err)
	}
	client, err := vieter.NewClient(e.ts.URL, apiKey)
	if err != nil {
		t.Fatal(err)
	}
	a, err := poll.New(client, newBuilder(t, e), poll.WithArch("x86_64"), poll.WithDataDir(t.TempDir()),
		poll.WithPollInterval(100*time.Millisecond), poll.WithFsync(false))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var log vieterserver.Log
	for log.ID == 0 && ctx.Err() == nil {
		for _, l := range e.srv.Logs() {
			if l.TargetID == id {
				log = l
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("agent: %v", err)
	}
	if log.ID == 0 {
		t.Fatal("no log uploaded")
	}
	content := string(log.Content)
	if log.ExitCode != 0 || log.Arch != "x86_64" || !strings.Contains(content, "+ MAKEFLAGS=") ||
		!strings.Contains(content, "vagent: success (published polled-1-1-any.pkg.tar.zst); exit code 0") {
		t.Errorf("log %d exit %d arch %s:\n%s", log.ID, log.ExitCode, log.Arch, content)
	}
	if len(e.srv.Packages(repo, "x86_64")) != 1 {
		t.Error("package not published")
	}
}

// TestTargetCaches: every target has a package cache of its own, used by
// one build at a time. A dependency comes from a repository behind a
// counting proxy: the second build of a target does not download it again
// (a cache hit), two builds of one target at once get the target's cache
// and a private one (two downloads at most, never a shared writable
// tree), and another target downloads it into its own cache. The cache
// holds one intact copy and no partial download.
// The repository has SigLevel Never: pacman 6.0 downloads a cached package
// again when its signature is not cached (an unsigned repository).
func TestTargetCaches(t *testing.T) {
	t.Parallel()
	e := setup(t)
	depRepo := newRepo()
	blob := make([]byte, 8<<20)
	rand.Read(blob)
	dep, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "bigdep", Version: "1-1", Arch: "any"},
		map[string]string{"usr/share/bigdep/blob": string(blob)}, vieterserver.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Publish(depRepo, dep); err != nil {
		t.Fatal(err)
	}
	target, _ := neturl.Parse(e.ts.URL)
	var downloads atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "bigdep-1-1-any.pkg") && !strings.HasSuffix(r.URL.Path, ".sig") {
			downloads.Add(1)
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer proxy.Close()
	b := newBuilder(t, e, job.WithRepos(pacman.Repo{Name: depRepo, Servers: []string{proxy.URL + "/$repo/$arch"}, SigLevel: "Never"}))
	repo := newRepo()
	build := func(id int, name string) string {
		t.Helper()
		url := serveFile(t, pkgbuild(name, "1", "1", "depends=(bigdep)"))
		r, log := runJob(t, b, poll.Job{TargetID: id, Kind: "url", URL: url, Repo: repo, BaseImage: e.base})
		if r.Result != poll.ResultSuccess || !strings.Contains(log, "installing bigdep") {
			t.Errorf("build of target %d: %s\n%s", id, r.Reason, log)
		}
		return log
	}
	build(20, "user0")
	if n := downloads.Load(); n != 1 {
		t.Fatalf("bigdep downloaded %d times by the first build", n)
	}
	build(20, "user1")
	if n := downloads.Load(); n != 1 {
		t.Errorf("the second build of target 20 downloaded bigdep again (%d downloads in all)", n)
	}

	var wg sync.WaitGroup
	logs := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			logs[i] = build(20, fmt.Sprintf("user%d", 2+i))
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	private := 0
	for _, log := range logs {
		if strings.Contains(log, "another build of this target holds its package cache") {
			private++
		}
	}
	n := downloads.Load()
	t.Logf("two builds of one target at once: %d with a private cache, %d download(s)", private, n-1)
	if n-1 != int32(private) {
		t.Errorf("%d download(s) by two builds of target 20 at once, %d of them with a private cache: want one per private cache", n-1, private)
	}

	build(21, "other")
	if d := downloads.Load() - n; d != 1 {
		t.Errorf("target 21 downloaded bigdep %d times, want once, into its own cache", d)
	}
	for _, id := range []int{20, 21} {
		tree := job.CacheTree(b, poll.Job{TargetID: id})
		cached, err := os.ReadFile(filepath.Join(tree, "bigdep-1-1-any.pkg.tar"))
		if err != nil {
			t.Fatalf("dependency not in the cache of target %d: %v", id, err)
		}
		if !bytes.Equal(cached, dep) {
			t.Errorf("cached package differs from the published one (%d vs %d bytes)", len(cached), len(dep))
		}
		if parts, _ := filepath.Glob(filepath.Join(tree, "*.part")); len(parts) > 0 {
			t.Errorf("partial downloads left in the cache: %v", parts)
		}
	}
}

// TestCacheMaxSize: three targets each download an 8 MiB dependency with
// pacman_cache.max_size at 12 MiB: after every build the caches together
// fit the bound (as the disk limit counts them), the target just built
// keeps its dependency, and the least recently used targets' caches went.
func TestCacheMaxSize(t *testing.T) {
	t.Parallel()
	e := setup(t)
	depRepo := newRepo()
	blob := make([]byte, 8<<20)
	rand.Read(blob)
	dep, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "sizedep", Version: "1-1", Arch: "any"},
		map[string]string{"usr/share/sizedep/blob": string(blob)}, vieterserver.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Publish(depRepo, dep); err != nil {
		t.Fatal(err)
	}
	const maxSize = 12 << 20
	b := newBuilder(t, e, job.WithCacheMaxSize(maxSize),
		job.WithRepos(pacman.Repo{Name: depRepo, Servers: []string{e.ts.URL + "/$repo/$arch"}, SigLevel: "Never"}))
	repo := newRepo()
	for i, id := range []int{30, 31, 32} {
		url := serveFile(t, pkgbuild(fmt.Sprintf("sized%d", i), "1", "1", "depends=(sizedep)"))
		r, log := runJob(t, b, poll.Job{TargetID: id, Kind: "url", URL: url, Repo: repo, BaseImage: e.base})
		if r.Result != poll.ResultSuccess || !strings.Contains(log, "installing sizedep") {
			t.Fatalf("build of target %d: %s\n%s", id, r.Reason, log)
		}
		tree := job.CacheTree(b, poll.Job{TargetID: id})
		caches := filepath.Dir(filepath.Dir(tree))
		total, err := sandbox.DiskUsage(caches)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("after target %d: the caches hold %.1f MiB", id, float64(total)/(1<<20))
		if total > maxSize {
			t.Errorf("after target %d's build the caches hold %d bytes, more than %d", id, total, maxSize)
		}
		if _, err := os.Stat(filepath.Join(tree, "sizedep-1-1-any.pkg.tar")); err != nil {
			t.Errorf("target %d's cache lost the dependency it just downloaded: %v", id, err)
		}
		if i > 0 {
			if _, err := os.Stat(job.CacheTree(b, poll.Job{TargetID: id - 1})); !os.IsNotExist(err) {
				t.Errorf("target %d's cache is still there after target %d's build: %v", id-1, id, err)
			}
		}
	}
}

// TestAgentLogFlood: a build that writes 300 MiB of output through the
// real sandbox, run by the agent with a 1 MiB log limit. The host is what
// is checked: the log the server gets (and the spool file behind it) stays
// at the limit, with a line that says so and the footer; the agent's heap
// stays bounded while the flood passes; the package is still published.
func TestAgentLogFlood(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo := newRepo()
	url := serveFile(t, strings.Replace(pkgbuild("flood", "1", "1"), `build() { echo "building $pkgname"; }`,
		`build() { head -c 300M /dev/zero | tr '\0' 'x'; echo; echo "flood done"; }`, 1))
	id := e.srv.AddTarget(vieterserver.Target{Kind: "url", URL: url, Repo: repo, BaseImage: e.base, Arches: []string{"x86_64"}})
	if err := e.srv.Enqueue(id, "x86_64", false); err != nil {
		t.Fatal(err)
	}
	const limit = 1 << 20
	a, err := poll.New(serverClient(t, e.ts.URL), newBuilder(t, e), poll.WithArch("x86_64"), poll.WithDataDir(t.TempDir()),
		poll.WithPollInterval(100*time.Millisecond), poll.WithFsync(false), poll.WithLogLimit(limit))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	var peak atomic.Uint64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for ctx.Err() == nil {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var log vieterserver.Log
	for log.ID == 0 && ctx.Err() == nil {
		for _, l := range e.srv.Logs() {
			if l.TargetID == id {
				log = l
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-sampled
	if err := <-done; err != nil {
		t.Errorf("agent: %v", err)
	}
	if log.ID == 0 {
		t.Fatal("no log uploaded")
	}
	c := string(log.Content)
	if len(c) > limit+4096 {
		t.Errorf("log of %d bytes, want at most the %d byte limit and a few lines", len(c), limit)
	}
	for _, want := range []string{"exceeded the log limit of 1048576 bytes", "bytes of output past the log limit", "vagent: success (published flood-1-1-any.pkg.tar.zst); exit code 0"} {
		if !strings.Contains(c, want) {
			t.Errorf("log lacks %q; its end:\n%s", want, c[max(0, len(c)-600):])
		}
	}
	if len(e.srv.Packages(repo, "x86_64")) != 1 {
		t.Error("package not published")
	}
	// Other tests run beside this one in the same process: the bound is
	// loose, far below the 300 MiB a buffering agent would hold.
	if p := peak.Load(); p > 150<<20 {
		t.Errorf("peak heap in use %d MiB during the flood", p>>20)
	}
	t.Logf("peak heap in use %.1f MiB; log %d bytes", float64(peak.Load())/(1<<20), len(c))
}
