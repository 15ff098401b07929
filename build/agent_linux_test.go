package build_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/build"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/poll"
)

// TestAgentWithBuilder runs the poll loop with the Builder as its
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
	client, err := poll.NewClient(e.ts.URL, apiKey)
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
	if log.ExitCode != 0 || log.Arch != "x86_64" || !strings.Contains(content, "+ makepkg --nobuild") ||
		!strings.Contains(content, "vagent: success (published polled-1-1-any.pkg.tar.zst); exit code 0") {
		t.Errorf("log %d exit %d arch %s:\n%s", log.ID, log.ExitCode, log.Arch, content)
	}
	if len(e.srv.Packages(repo, "x86_64")) != 1 {
		t.Error("package not published")
	}
}

// TestConcurrentBuildsShareCache runs two builds at once that both install
// the same dependency from the repository, on one Builder: the shared
// package cache ends up with one intact copy, and a third build takes the
// dependency from the cache instead of downloading it.
func TestConcurrentBuildsShareCache(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo := newRepo()
	blob := make([]byte, 8<<20)
	rand.Read(blob)
	dep, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "bigdep", Version: "1-1", Arch: "any"},
		map[string]string{"usr/share/bigdep/blob": string(blob)}, vieterserver.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Publish(repo, dep); err != nil {
		t.Fatal(err)
	}
	b := newBuilder(t, e)
	var wg sync.WaitGroup
	logs := make([]string, 3)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := serveFile(t, pkgbuild(fmt.Sprintf("user%d", i), "1", "1", "depends=(bigdep)"))
			r, log := runJob(t, b, poll.Job{TargetID: 20 + i, Kind: "url", URL: url, Repo: repo, BaseImage: e.base})
			logs[i] = log
			if r.Status != poll.ResultSuccess {
				t.Errorf("build %d: %s\n%s", i, r.Reason, log)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	pkgs := e.srv.Packages(repo, "x86_64")
	var want []byte
	for _, p := range pkgs {
		if p.Info.Name == "bigdep" {
			want = dep
			if got, err := os.ReadFile(filepath.Join(e.srv.RepoDir(repo, "x86_64"), p.Filename)); err == nil {
				want = got
			}
			cached, err := os.ReadFile(filepath.Join(cacheDirOf(t, b), p.Filename))
			if err != nil {
				t.Fatalf("dependency not in the shared cache: %v", err)
			}
			if string(cached) != string(want) {
				t.Errorf("cached %s differs from the repository's (%d vs %d bytes)", p.Filename, len(cached), len(want))
			}
		}
	}
	if want == nil {
		t.Fatal("bigdep not in the repository")
	}
	if parts, _ := filepath.Glob(filepath.Join(cacheDirOf(t, b), "*.part")); len(parts) > 0 {
		t.Errorf("partial downloads left in the cache: %v", parts)
	}
	url := serveFile(t, pkgbuild("user2", "1", "1", "depends=(bigdep)"))
	r, log := runJob(t, b, poll.Job{TargetID: 22, Kind: "url", URL: url, Repo: repo, BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	if !strings.Contains(log, "installing bigdep") || strings.Contains(log, "bigdep-1-1-any downloading") {
		t.Errorf("third build did not install bigdep from the cache:\n%s", log)
	}
}

func cacheDirOf(t testing.TB, b *build.Builder) string { return build.CacheDir(b) }
