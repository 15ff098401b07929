package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
)

// BenchmarkRootless compares, in one run, an ordinary user's vagent with
// root's on the same host, stack and binary: `vagent image pull` of the
// Arch-like image into an empty data dir (download from the local registry
// and unpack: rootless, the owners are shifted to the user's subordinate
// ids, and the process first enters its user namespace), and `vagent
// build` of a trivial PKGBUILD on a builder prepared beforehand (a whole
// build: the namespace, the builder lease, the isolated network, the
// container, makepkg, the package copied out). Rounds alternate which mode
// goes first, and every measurement starts with the disk flushed; it
// reports the medians and rootless/rootful (goal: ≤ 1.2).
func BenchmarkRootless(b *testing.B) {
	testkit.RequireRoot(b)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	e := newRootlessEnv(b, ctx, "")
	rounds := 7
	if n, err := strconv.Atoi(os.Getenv("VAGENT_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	// Root's side: its own data dir and agent.yaml, the same binary.
	rootDir, err := os.MkdirTemp("", "vagent-bench-rootful-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(rootDir)
	if err := os.Chmod(rootDir, 0o755); err != nil {
		b.Fatal(err)
	}
	rootCfg := filepath.Join(rootDir, "agent.yaml")
	if err := os.WriteFile(rootCfg, []byte(e.st.AgentYAML(filepath.Join(rootDir, "data"), "x86_64", 1, time.Second)), 0o600); err != nil {
		b.Fatal(err)
	}
	rootSrc := filepath.Join(rootDir, "src")
	if err := os.Mkdir(rootSrc, 0o755); err != nil {
		b.Fatal(err)
	}
	pkgbuild := testkit.DemoPKGBUILD("bench-trivial", "1.0")
	if err := os.WriteFile(filepath.Join(rootSrc, "PKGBUILD"), []byte(pkgbuild), 0o644); err != nil {
		b.Fatal(err)
	}
	userSrc := filepath.Join(e.u.Home, "src")
	e.write(b, filepath.Join(userSrc, "PKGBUILD"), pkgbuild, 0o644)

	type mode struct {
		name string
		run  func(args ...string) (time.Duration, string, int)
		cfg  string
		src  string
		out  string
		data func(round int) string
	}
	timed := func(cmd *exec.Cmd) (time.Duration, string, int) {
		start := time.Now()
		out, _ := cmd.CombinedOutput()
		return time.Since(start), string(out), cmd.ProcessState.ExitCode()
	}
	modes := []mode{
		{name: "rootful", cfg: rootCfg, src: rootSrc, out: filepath.Join(rootDir, "out"),
			run:  func(args ...string) (time.Duration, string, int) { return timed(exec.Command(e.bin, args...)) },
			data: func(r int) string { return filepath.Join(rootDir, "pull-"+strconv.Itoa(r)) }},
		{name: "rootless", cfg: e.cfg, src: userSrc, out: filepath.Join(e.u.Home, "out"),
			run:  func(args ...string) (time.Duration, string, int) { return timed(e.u.Command(e.bin, args...)) },
			data: func(r int) string { return filepath.Join(e.u.Home, "pull-"+strconv.Itoa(r)) }},
	}
	build := func(m mode) (time.Duration, string, int) {
		return m.run("build", "--config", m.cfg, "--base-image", e.st.BaseImage, "--out", m.out, m.src)
	}
	// Warm up: each mode prepares its builder once, outside the figures.
	for _, m := range modes {
		if _, out, code := build(m); code != 0 {
			b.Fatalf("%s warm-up build: exit %d\n%s", m.name, code, out)
		}
	}
	pulls := map[string][]time.Duration{}
	builds := map[string][]time.Duration{}
	b.ResetTimer()
	for r := range rounds {
		order := modes
		if r%2 == 1 {
			order = []mode{modes[1], modes[0]}
		}
		// Each measurement starts with the disk's writes flushed (sync): the
		// previous one's (a pull writes thousands of files) would
		// otherwise slow the next.
		for _, m := range order {
			_ = exec.Command("sync").Run()
			d, out, code := m.run("image", "pull", "--data-dir", m.data(r), "--insecure", e.st.Registry.Host(), e.st.BaseImage)
			if code != 0 {
				b.Fatalf("%s pull: exit %d\n%s", m.name, code, out)
			}
			pulls[m.name] = append(pulls[m.name], d)
		}
		for _, m := range order {
			_ = exec.Command("sync").Run()
			d, out, code := build(m)
			if code != 0 {
				b.Fatalf("%s build: exit %d\n%s", m.name, code, out)
			}
			if dir := os.Getenv("VAGENT_BENCH_OUTPUT"); dir != "" { // each build's output, for a closer look
				_ = os.WriteFile(filepath.Join(dir, m.name+"-build-"+strconv.Itoa(r)+".log"), []byte(d.String()+"\n"+out), 0o644)
			}
			builds[m.name] = append(builds[m.name], d)
		}
		_ = os.RemoveAll(modes[0].data(r))
		_ = os.RemoveAll(modes[1].data(r))
		_ = exec.Command("sync").Run()
	}
	b.StopTimer()
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	var lines []string
	for _, what := range []struct {
		name string
		m    map[string][]time.Duration
	}{{"pull", pulls}, {"build", builds}} {
		rf, rl := median(what.m["rootful"]), median(what.m["rootless"])
		b.ReportMetric(rf.Seconds(), what.name+"-rootful-s")
		b.ReportMetric(rl.Seconds(), what.name+"-rootless-s")
		b.ReportMetric(rl.Seconds()/rf.Seconds(), what.name+"-rootless/rootful")
		lines = append(lines, what.name+": rootful "+rf.Round(time.Millisecond).String()+" "+fmtDurations(what.m["rootful"])+
			", rootless "+rl.Round(time.Millisecond).String()+" "+fmtDurations(what.m["rootless"])+
			", ratio "+strconv.FormatFloat(rl.Seconds()/rf.Seconds(), 'f', 2, 64))
	}
	b.Logf("medians of %d rounds:\n%s", rounds, strings.Join(lines, "\n"))
}

func fmtDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = strconv.FormatFloat(d.Seconds(), 'f', 2, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
