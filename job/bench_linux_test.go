package job_test

import (
	"bytes"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

// stampLog records when lines starting with given prefixes arrive.
type stampLog struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	seen  map[string]time.Time
	marks []string
}

func newStampLog(marks ...string) *stampLog {
	return &stampLog{seen: map[string]time.Time{}, marks: marks}
}

func (s *stampLog) Write(p []byte) (int, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	start := s.buf.Len()
	s.buf.Write(p)
	// Look at the complete lines that this write finished.
	text := s.buf.String()
	from := strings.LastIndex(text[:start], "\n") + 1
	for _, line := range strings.Split(text[from:], "\n") {
		for _, m := range s.marks {
			if _, ok := s.seen[m]; !ok && strings.HasPrefix(line, m) {
				s.seen[m] = now
			}
		}
	}
	return len(p), nil
}

func (s *stampLog) span(from, to string) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok1 := s.seen[from]
	b, ok2 := s.seen[to]
	return b.Sub(a), ok1 && ok2
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkBuildOverhead measures what vagent adds around a trivial build:
// the wall time of Runner.Build (forced, so it always builds and
// publishes) minus the time of the makepkg that builds (from its
// announcement to "Finished making", timed as the log streams). Medians of
// VAGENT_BENCH_ROUNDS (default 10) rounds after a warm-up that prepares the
// builder. When podman is installed the same job runs the way the
// reference Vieter agent runs it, a script in `podman run --rm` on the same
// builder image (repository and upgrade, download, makepkg --nobuild
// --syncdeps, makepkg, upload), and the overheads are compared.
func BenchmarkBuildOverhead(b *testing.B) {
	e := setup(b)
	rounds := 10
	if n, err := strconv.Atoi(os.Getenv("VAGENT_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	pb := pkgbuild("trivial", "1", "1")
	url := serveFile(b, pb)
	bl := newBuilder(b, e)
	j := poll.Job{TargetID: 99, Kind: "url", URL: url, Repo: newRepo(), BaseImage: e.base, Force: true}
	if r, log := runJob(b, bl, j); r.Result != poll.ResultSuccess {
		b.Fatalf("warm-up: %s\n%s", r.Reason, log)
	}
	var totals, makepkgs, overheads []time.Duration
	for range b.N {
		for i := 0; i < rounds; i++ {
			log := newStampLog("+ MAKEFLAGS=", "==> Finished making:")
			r := build(b.Context(), bl, j, "", poll.DefaultLogLimit, log)
			if r.Result != poll.ResultSuccess {
				b.Fatalf("round %d: %s\n%s", i, r.Reason, log.buf.String())
			}
			mk, ok := log.span("+ MAKEFLAGS=", "==> Finished making:")
			if !ok {
				b.Fatalf("makepkg markers not in the log:\n%s", log.buf.String())
			}
			total := r.End.Sub(r.Start)
			totals, makepkgs, overheads = append(totals, total), append(makepkgs, mk), append(overheads, total-mk)
		}
	}
	b.ReportMetric(median(totals).Seconds(), "total-s")
	b.ReportMetric(median(makepkgs).Seconds(), "makepkg-s")
	b.ReportMetric(median(overheads).Seconds(), "overhead-s")
	b.Logf("vagent, %d rounds: total %s, makepkg %s, overhead %s (medians)", len(totals), median(totals), median(makepkgs), median(overheads))

	podman, err := exec.LookPath("podman")
	if err != nil {
		b.Log("podman not installed (Debian package podman): no comparison")
		return
	}
	// The builder image, from the builder's OCI layout, in a podman store
	// of the benchmark's own (never the machine's), imported by an untimed
	// first run as vagent's builder was prepared by its warm-up.
	layout := filepath.Join(e.dir, "builders", "oci")
	img := "oci:" + layout + ":" + builder.LayoutTag(e.base)
	store := b.TempDir()
	pm := func(args ...string) *exec.Cmd {
		return exec.Command(podman, append([]string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run")}, args...)...)
	}
	defer pm("rmi", "--all", "--force").Run()
	run := append(append([]string{"run", "--rm", "--network", "host"}, testkit.PodmanRunLimits()...), img)
	if out, err := pm(append(run, "true")...).CombinedOutput(); err != nil {
		b.Fatalf("podman: importing the builder image: %v\n%s", err, out)
	}
	// What the reference agent runs in its container: the job's repository
	// in pacman.conf and an upgrade, then as builder the PKGBUILD download,
	// makepkg --nobuild --syncdeps, the build, and the upload of each
	// package with the API key (force: no existence check).
	script := `set -e
printf '\n[%s]\nServer = %s\nSigLevel = Optional\n' "$REPO" "$SERVER/\$repo/\$arch" >>/etc/pacman.conf
pacman -Syu --needed --noconfirm
cd /build
exec setpriv --reuid=builder --regid=builder --init-groups env HOME=/home/builder bash -c '
set -e
rm -rf repo; mkdir repo; curl -fsSL -o repo/PKGBUILD "$URL"; cd repo
makepkg --nobuild --syncdeps --needed --noconfirm
echo "+ MAKEFLAGS=-j$(nproc) makepkg"
MAKEFLAGS=-j$(nproc) makepkg --syncdeps --needed --noconfirm --noextract
for f in *.pkg*; do curl -fsS -H "X-Api-Key: $KEY" --data-binary "@$f" "$SERVER/$REPO/publish"; echo; done'`
	var ptotals, poverheads []time.Duration
	for i := 0; i < rounds; i++ {
		log := newStampLog("+ MAKEFLAGS=", "==> Finished making:")
		cmd := pm(append(run[:len(run)-1:len(run)-1], "-e", "REPO="+j.Repo, "-e", "SERVER="+e.ts.URL, "-e", "URL="+url, "-e", "KEY="+apiKey,
			img, "bash", "-c", script)...)
		cmd.Stdout, cmd.Stderr = log, log
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("podman round %d: %v\n%s", i, err, log.buf.String())
		}
		total := time.Since(start)
		mk, ok := log.span("+ MAKEFLAGS=", "==> Finished making:")
		if !ok {
			b.Fatalf("podman round %d: makepkg markers not in the log:\n%s", i, log.buf.String())
		}
		ptotals, poverheads = append(ptotals, total), append(poverheads, total-mk)
	}
	b.ReportMetric(median(ptotals).Seconds(), "podman-total-s")
	b.ReportMetric(median(poverheads).Seconds(), "podman-overhead-s")
	ratio := float64(median(overheads)) / float64(median(poverheads))
	b.ReportMetric(ratio, "overhead-vs-podman")
	// The whole build against the reference flow: vagent runs makepkg once
	// for this PKGBUILD (no pkgver()), the reference twice.
	total := float64(median(totals)) / float64(median(ptotals))
	b.ReportMetric(total, "total-vs-podman")
	b.Logf("podman: total %s, overhead %s; vagent/podman overhead ratio %.2f, total ratio %.2f", median(ptotals), median(poverheads), ratio, total)
}

// BenchmarkLocalBuild measures `vagent build` of a trivial local PKGBUILD
// (Runner.Run from a source directory, copying the package out, through
// poll.RunJob as the command runs it, builder lease included) with one
// makepkg run, against the flow of earlier versions (makepkg --nobuild,
// then makepkg --noextract: job.WithTwoPasses), interleaved round by round
// on the same warm builder and cache. It reports the medians and their
// ratio (goal: at most 0.7).
func BenchmarkLocalBuild(b *testing.B) {
	e := setup(b)
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("VAGENT_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	src := b.TempDir()
	if err := os.WriteFile(filepath.Join(src, "PKGBUILD"), []byte(pkgbuild("local-trivial", "1", "1")), 0o644); err != nil {
		b.Fatal(err)
	}
	runner := func(opts ...job.Option) *job.Runner {
		r, err := job.New(e.sb, e.images, filepath.Join(b.TempDir(), "build"),
			append([]job.Option{job.WithOutDir(b.TempDir(), -1, -1), job.WithLocalImages(true), netOpt(e.ts.URL)}, opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	one, two := runner(), runner(job.WithTwoPasses())
	j := poll.Job{Path: "", BaseImage: e.base, Repo: "local"}
	run := func(r *job.Runner) time.Duration {
		var log bytes.Buffer
		start := time.Now()
		res := build(b.Context(), r, j, src, poll.DefaultLogLimit, &log)
		took := time.Since(start)
		if res.Result != poll.ResultSuccess {
			b.Fatalf("%s\n%s", res.Reason, log.String())
		}
		return took
	}
	run(one) // warm-up: the builder, the cache
	var after, before []time.Duration
	for range b.N {
		for range rounds {
			after = append(after, run(one))
			before = append(before, run(two))
		}
	}
	ratio := float64(median(after)) / float64(median(before))
	b.ReportMetric(median(after).Seconds(), "one-makepkg-s")
	b.ReportMetric(median(before).Seconds(), "two-makepkg-s")
	b.ReportMetric(ratio, "after-vs-before")
	b.Logf("vagent build of a trivial PKGBUILD, %d rounds: one makepkg run %s, two (earlier versions) %s; ratio %.2f (medians)",
		len(after), median(after), median(before), ratio)
}

// mirrorRate is the speed of the benchmark's package mirror: 100 Mbit/s.
const mirrorRate = 100e6 / 8

// throttled sends at most rate bytes per second.
type throttled struct {
	http.ResponseWriter
	rate  float64
	start time.Time
	sent  int64
}

func (t *throttled) Write(p []byte) (int, error) {
	n, err := t.ResponseWriter.Write(p)
	t.sent += int64(n)
	if ahead := time.Duration(float64(t.sent)/t.rate*float64(time.Second)) - time.Since(t.start); ahead > 0 {
		time.Sleep(ahead)
	}
	return n, err
}

// BenchmarkCacheHit measures the package cache's purpose and the cost of
// the disk limit on whole builds, interleaved in each round: a build whose
// dependency (a 32 MiB package from a mirror at 100 Mbit/s, a throttling
// and counting proxy) is in its target's
// cache ("hit"), the same build with the caches off, so that it downloads
// the dependency ("miss"), and the hit with build_limits.disk set
// ("hit-disk": RLIMIT_FSIZE and the watcher). Every build is forced (it
// always builds and publishes). A hit that downloads the dependency fails
// the benchmark. Medians of VAGENT_BENCH_ROUNDS (default 5) rounds after a
// warm-up that prepares the builder and fills the targets' caches.
func BenchmarkCacheHit(b *testing.B) {
	e := setup(b)
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("VAGENT_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	depRepo := newRepo()
	blob := make([]byte, 32<<20)
	rand.Read(blob)
	dep, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "benchdep", Version: "1-1", Arch: "any"},
		map[string]string{"usr/share/benchdep/blob": string(blob)}, vieterserver.NoCompression)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.srv.Publish(depRepo, dep); err != nil {
		b.Fatal(err)
	}
	target, _ := neturl.Parse(e.ts.URL)
	var downloads atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "benchdep-1-1-any.pkg") && !strings.HasSuffix(r.URL.Path, ".sig") {
			downloads.Add(1)
			w = &throttled{ResponseWriter: w, rate: mirrorRate, start: time.Now()}
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer proxy.Close()
	repos := job.WithRepos(pacman.Repo{Name: depRepo, Servers: []string{proxy.URL + "/$repo/$arch"}, SigLevel: "Never"})
	url := serveFile(b, pkgbuild("benchuser", "1", "1", "depends=(benchdep)"))
	repo := newRepo()
	type variant struct {
		name      string
		runner    *job.Runner
		job       poll.Job
		downloads bool // expected to download
		totals    []time.Duration
	}
	variants := []*variant{
		{name: "hit", runner: newBuilder(b, e, repos), job: poll.Job{TargetID: 90}},
		{name: "miss", runner: newBuilder(b, e, repos, job.WithCacheDir("")), job: poll.Job{TargetID: 91}, downloads: true},
		{name: "hit-disk", runner: newBuilder(b, e, repos, job.WithLimits(sandbox.Limits{Disk: 8 << 30})), job: poll.Job{TargetID: 92}},
	}
	for _, v := range variants {
		v.job.Kind, v.job.URL, v.job.Repo, v.job.BaseImage, v.job.Force = "url", url, repo, e.base, true
		if r, log := runJob(b, v.runner, v.job); r.Result != poll.ResultSuccess {
			b.Fatalf("warm-up of %s: %s\n%s", v.name, r.Reason, log)
		}
	}
	b.ResetTimer()
	for range b.N {
		for i := 0; i < rounds; i++ {
			for k := range variants {
				v := variants[(i+k)%len(variants)] // the order rotates
				before := downloads.Load()
				var log bytes.Buffer
				r := build(b.Context(), v.runner, v.job, "", poll.DefaultLogLimit, &log)
				if r.Result != poll.ResultSuccess || !strings.Contains(log.String(), "benchdep") {
					b.Fatalf("%s round %d: %s\n%s", v.name, i, r.Reason, log.String())
				}
				if got := downloads.Load() - before; (got > 0) != v.downloads {
					b.Fatalf("%s round %d downloaded the dependency %d times", v.name, i, got)
				}
				v.totals = append(v.totals, r.End.Sub(r.Start))
			}
		}
	}
	b.StopTimer()
	med := map[string]time.Duration{}
	for _, v := range variants {
		med[v.name] = median(v.totals)
		b.ReportMetric(med[v.name].Seconds(), v.name+"-s")
	}
	b.ReportMetric(float64(med["hit"])/float64(med["miss"]), "hit/miss")
	b.ReportMetric(float64(med["hit-disk"])/float64(med["hit"]), "disk/hit")
	b.Logf("%d rounds, medians: hit %s, miss %s, hit with a disk limit %s", rounds, med["hit"], med["miss"], med["hit-disk"])
}
