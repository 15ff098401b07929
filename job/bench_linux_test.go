package job_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/poll"
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
	b.Logf("podman: total %s, overhead %s; vagent/podman overhead ratio %.2f", median(ptotals), median(poverheads), ratio)
}
