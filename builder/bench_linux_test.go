package builder_test

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/oci"
)

// BenchmarkBuilderCachedAcquire measures Acquire + Release of a fresh,
// cached builder for a small base (busybox, a few files) and a large one
// (the Arch-like image, about 10,000 paths): the target is under 50 ms and
// independent of the image's size (the ratio large/small near 1).
func BenchmarkBuilderCachedAcquire(b *testing.B) {
	e := newEnv(b, builder.WithRepos(archRepo(b)))
	reg := startRegistry(b)
	small := pushed(b, reg, "fake", fakeBase(b, nil))
	arch, _ := testkit.ArchLike(b)
	large := pushed(b, reg, "archlike", arch)
	for _, base := range []string{small, large} {
		l, err := e.m.Acquire(b.Context(), base, nil)
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
	var ds [2]time.Duration
	b.ResetTimer()
	for b.Loop() {
		for i, base := range []string{small, large} {
			start := time.Now()
			l, err := e.m.Acquire(b.Context(), base, nil)
			if err != nil {
				b.Fatal(err)
			}
			l.Release()
			ds[i] += time.Since(start)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(ds[0].Microseconds())/n/1000, "small-ms")
	b.ReportMetric(float64(ds[1].Microseconds())/n/1000, "large-ms")
	b.ReportMetric(float64(ds[1])/float64(ds[0]), "large/small")
}

// BenchmarkBuilderCold measures a cold preparation (pull, unpack, setup,
// layer, image, rootfs) of the Arch-like image with real pacman and the
// two meta packages from a local repository; each round uses a new data
// directory. The same preparation with podman (podman run the setup, then
// podman commit) is reported beside it, as a ratio, when podman is
// installed.
func BenchmarkBuilderCold(b *testing.B) {
	testkit.RequireRoot(b)
	repo := archRepo(b)
	reg := startRegistry(b)
	arch, _ := testkit.ArchLike(b)
	base := pushed(b, reg, "archlike", arch)
	podman, podmanErr := exec.LookPath("podman")
	var vagent, peer time.Duration
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b)
		store, err := oci.NewStore(filepath.Join(e.dir, "cold-images"))
		if err != nil {
			b.Fatal(err)
		}
		m, err := builder.New(store, e.sb, filepath.Join(e.dir, "cold-builders"), builder.WithRepos(repo))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		l, err := m.Acquire(b.Context(), base, nil)
		if err != nil {
			b.Fatal(err)
		}
		vagent += time.Since(start)
		b.StopTimer()
		l.Release()
		m.Close()
		if podmanErr == nil {
			peer += podmanPrepare(b, podman, base, repo)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(vagent.Seconds()/n, "vagent-s")
	if podmanErr != nil {
		b.Logf("podman comparison skipped: %v (Debian package podman)", podmanErr)
		return
	}
	b.ReportMetric(peer.Seconds()/n, "podman-s")
	b.ReportMetric(float64(vagent)/float64(peer), "vagent/podman")
}

// podmanPrepare does the reference agent's preparation with podman: pull,
// run the setup, commit. The setup is the equivalent shell command: the
// extra repository, pacman -Syu of base-devel and git, the builder user
// (1000:1000) with password-less sudo, /build owned by it. Each call uses
// a new podman store of its own, so that every preparation is cold (as
// vagent's, on a new data directory) and the machine's images are never
// touched.
func podmanPrepare(b *testing.B, podman, base string, repo pacman.Repo) time.Duration {
	b.Helper()
	store := b.TempDir()
	pm := func(args ...string) *exec.Cmd {
		return exec.CommandContext(b.Context(), podman, append([]string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run")}, args...)...)
	}
	const name = "vagent-bench-builder"
	start := time.Now()
	run := append([]string{"run", "--name", name, "--network", "host"}, testkit.PodmanRunLimits()...)
	for _, args := range [][]string{
		{"pull", "--tls-verify=false", "--quiet", base},
		append(run, base, "/bin/sh", "-c",
			"printf '\\n[%s]\\nSigLevel = %s\\nServer = %s\\n' \"$0\" \"$1\" \"$2\" >>/etc/pacman.conf && "+
				"pacman -Syu --needed --noconfirm base-devel git && "+
				"{ grep -q '^builder:' /etc/group || groupadd -g 1000 builder; } && "+
				"{ grep -q '^builder:' /etc/passwd || useradd -m -u 1000 -g builder builder; } && "+
				"echo 'builder ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/builder && "+
				"mkdir -p /build && chown builder:builder /build",
			repo.Name, repo.SigLevel, repo.Servers[0]),
		{"commit", "--quiet", name, name},
	} {
		if out, err := pm(args...).CombinedOutput(); err != nil {
			b.Fatalf("podman %v: %v\n%s", args, err, out)
		}
	}
	d := time.Since(start)
	pm("rm", "--force", name).Run()
	pm("rmi", "--all", "--force").Run()
	return d
}
