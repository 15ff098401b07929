//go:build linux

package oci_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/oci"
)

// Environment of the pull helper process (TestBenchPullChild).
const (
	envChildRef     = "VAGENT_BENCH_PULL_REF"
	envChildDir     = "VAGENT_BENCH_PULL_DIR"
	envChildProfile = "VAGENT_BENCH_CPUPROFILE" // also read by the benchmark
	envRounds       = "VAGENT_BENCH_ROUNDS"
	envChildNoSync  = "VAGENT_BENCH_NOSYNC" // store without syncfs (peers do not sync)
	envChildTrace   = "VAGENT_BENCH_TRACE"  // print the phases' times (manual runs)
)

// TestBenchPullChild is not a test: BenchmarkPullUnpack re-executes the
// test binary to run one cold pull + unpack in a process of its own, so
// that its peak memory (rusage maxrss) is vagent's alone.
func TestBenchPullChild(t *testing.T) {
	ref := os.Getenv(envChildRef)
	if ref == "" {
		t.Skip("helper process of BenchmarkPullUnpack")
	}
	if p := os.Getenv(envChildProfile); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	var opts []oci.Option
	if os.Getenv(envChildNoSync) != "" {
		opts = append(opts, oci.WithSync(false))
	}
	if os.Getenv(envChildTrace) != "" {
		start := time.Now()
		var mu sync.Mutex
		last := map[string]oci.Phase{}
		opts = append(opts, oci.WithProgress(func(p oci.Progress) {
			mu.Lock()
			defer mu.Unlock()
			k := fmt.Sprint(p.Index)
			if last[k] == p.Phase {
				return // one line per phase change
			}
			last[k] = p.Phase
			fmt.Fprintf(os.Stderr, "%8.3fs layer %d %s\n", time.Since(start).Seconds(), p.Index, p.Phase)
		}))
	}
	store, err := oci.NewStore(os.Getenv(envChildDir), opts...)
	if err != nil {
		t.Fatal(err)
	}
	rf, err := store.Rootfs(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	_ = rf.Release()
}

// BenchmarkPullUnpack measures a cold pull + unpack of the Arch-like image
// from a local registry, interleaving in one run (median of 5 rounds, or
// $VAGENT_BENCH_ROUNDS):
//
//	vagent         oci.Store.Rootfs in a child process, fresh store each time
//	vagent-nosync  the same without the final syncfs (the peers do not sync)
//	skopeo-umoci   skopeo copy to an OCI layout, then umoci unpack (skopeo
//	               recompresses the small zstd and uncompressed layers to
//	               gzip, which umoci 0.4.7 needs: a few KiB)
//	floor          every layer blob decompressed to /dev/null (pigz, zstd)
//	               plus tar -x of the same uncompressed bytes
//
// It reports the medians of wall and CPU time, the wall-time ratios
// vagent/peer and vagent's peak RSS. The order of the contenders rotates
// from round to round.
// Targets: <= 0.5x skopeo-umoci, <= 1.3x floor, < 100 MiB. The load
// average before and after the rounds is logged with the figures. One run of the
// function does all rounds (use -benchtime 1x). Set
// VAGENT_BENCH_CPUPROFILE=FILE to profile vagent's last round.
func BenchmarkPullUnpack(b *testing.B) {
	testkit.RequireRoot(b) // owners are kept only as root, by all three
	skopeo := testkit.RequireTool(b, "skopeo", "skopeo")
	umoci := testkit.RequireTool(b, "umoci", "umoci")
	pigz := testkit.RequireTool(b, "pigz", "pigz")
	zstd := testkit.RequireTool(b, "zstd", "zstd")
	tarBin := testkit.RequireTool(b, "tar", "tar")
	img, _ := testkit.ArchLike(b)
	reg := testkit.StartTestRegistry(b)
	ref := reg.Host() + "/bench/archlike:" + testkit.ArchLikeTag
	if err := testkit.Push(b.Context(), img, ref); err != nil {
		b.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	rounds := 5
	if s := os.Getenv(envRounds); s != "" {
		if rounds, err = strconv.Atoi(s); err != nil || rounds < 1 {
			b.Fatalf("%s=%q: want a positive number", envRounds, s)
		}
	}

	// The floor's inputs: each layer blob and its uncompressed tar.
	work := b.TempDir()
	layers, err := img.Layers()
	if err != nil {
		b.Fatal(err)
	}
	type blob struct {
		path, tar string
		mt        types.MediaType
	}
	var blobs []blob
	var compressed, uncompressed int64
	for i, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			b.Fatal(err)
		}
		bl := blob{path: filepath.Join(work, fmt.Sprintf("blob%d", i)), tar: filepath.Join(work, fmt.Sprintf("layer%d.tar", i)), mt: mt}
		compressed += copyTo(b, bl.path, l.Compressed)
		uncompressed += copyTo(b, bl.tar, l.Uncompressed)
		blobs = append(blobs, bl)
	}

	// The contenders, each returning its CPU time (user+system of its
	// processes); the wall time is measured around it.
	var maxRSS int64
	vagent := func(dir string, last, noSync bool) time.Duration {
		cmd := exec.CommandContext(b.Context(), self, "-test.run=^TestBenchPullChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envChildRef+"="+ref, envChildDir+"="+filepath.Join(dir, "store"), envChildTrace+"=")
		if !last || noSync {
			cmd.Env = append(cmd.Env, envChildProfile+"=")
		}
		if noSync {
			cmd.Env = append(cmd.Env, envChildNoSync+"=1")
		} else {
			cmd.Env = append(cmd.Env, envChildNoSync+"=")
		}
		cpu := execCPU(b, cmd, false)
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			maxRSS = max(maxRSS, ru.Maxrss*1024)
		}
		return cpu
	}
	contenders := []struct {
		name string
		run  func(dir string, last bool) time.Duration
	}{
		{"vagent", func(dir string, last bool) time.Duration { return vagent(dir, last, false) }},
		{"vagent-nosync", func(dir string, last bool) time.Duration { return vagent(dir, last, true) }},
		{"skopeo-umoci", func(dir string, _ bool) time.Duration {
			layout := filepath.Join(dir, "layout")
			return execCPU(b, exec.CommandContext(b.Context(), skopeo, "--insecure-policy", "copy", "--quiet",
				"--src-tls-verify=false", "--dest-compress-format=gzip", "docker://"+ref, "oci:"+layout+":"+testkit.ArchLikeTag), false) +
				execCPU(b, exec.CommandContext(b.Context(), umoci, "unpack", "--image", layout+":"+testkit.ArchLikeTag, filepath.Join(dir, "bundle")), false)
		}},
		{"floor", func(dir string, _ bool) time.Duration {
			var cpu time.Duration
			for _, bl := range blobs {
				switch bl.mt {
				case types.OCILayer, types.DockerLayer:
					cpu += execCPU(b, exec.CommandContext(b.Context(), pigz, "-dc", bl.path), true)
				case types.OCILayerZStd:
					cpu += execCPU(b, exec.CommandContext(b.Context(), zstd, "-dcq", bl.path), true)
				default: // uncompressed: nothing to inflate
				}
			}
			floorDir := filepath.Join(dir, "floor")
			if err := os.Mkdir(floorDir, 0o755); err != nil {
				b.Fatal(err)
			}
			for _, bl := range blobs {
				cpu += execCPU(b, exec.CommandContext(b.Context(), tarBin, "-x", "-p", "--numeric-owner", "-f", bl.tar, "-C", floorDir), false)
			}
			return cpu
		}},
	}
	loadBefore := loadAvg()
	wall := make([][]time.Duration, len(contenders))
	cpu := make([][]time.Duration, len(contenders))
	for r := range rounds {
		line := fmt.Sprintf("round %d:", r+1)
		// Rotate the order so that no contender always runs first.
		for k := range contenders {
			i := (k + r) % len(contenders)
			c := contenders[i]
			dir := filepath.Join(work, fmt.Sprintf("round%d-%s", r, c.name))
			if err := os.Mkdir(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			used := c.run(dir, r == rounds-1)
			wall[i] = append(wall[i], time.Since(start))
			cpu[i] = append(cpu[i], used)
			if err := os.RemoveAll(dir); err != nil {
				b.Fatal(err)
			}
			line += fmt.Sprintf(" %s %.2fs (cpu %.2fs)", c.name, wall[i][r].Seconds(), used.Seconds())
		}
		b.Log(line)
	}

	v, vn, p, f := median(wall[0]), median(wall[1]), median(wall[2]), median(wall[3])
	b.ReportMetric(0, "ns/op") // the figures below are the result
	b.ReportMetric(v.Seconds(), "vagent-s")
	b.ReportMetric(vn.Seconds(), "vagent-nosync-s")
	b.ReportMetric(p.Seconds(), "skopeo-umoci-s")
	b.ReportMetric(f.Seconds(), "floor-s")
	b.ReportMetric(v.Seconds()/p.Seconds(), "ratio-vs-skopeo-umoci")
	b.ReportMetric(v.Seconds()/f.Seconds(), "ratio-vs-floor")
	b.ReportMetric(median(cpu[0]).Seconds(), "vagent-cpu-s")
	b.ReportMetric(median(cpu[2]).Seconds(), "skopeo-umoci-cpu-s")
	b.ReportMetric(median(cpu[3]).Seconds(), "floor-cpu-s")
	b.ReportMetric(float64(maxRSS)/(1<<20), "vagent-peak-MiB")
	b.Logf("Arch-like image: %d layers, %.0f MiB compressed, %.0f MiB uncompressed; medians of %d rounds: "+
		"vagent %.2fs (without syncfs %.2fs), skopeo+umoci %.2fs (ratio %.2f, target <= 0.5), floor %.2fs (ratio %.2f, target <= 1.3); "+
		"cpu: vagent %.2fs, skopeo+umoci %.2fs, floor %.2fs; vagent peak RSS %.0f MiB (target < 100); load average before %s, after %s",
		len(blobs), float64(compressed)/(1<<20), float64(uncompressed)/(1<<20), rounds,
		v.Seconds(), vn.Seconds(), p.Seconds(), v.Seconds()/p.Seconds(), f.Seconds(), v.Seconds()/f.Seconds(),
		median(cpu[0]).Seconds(), median(cpu[2]).Seconds(), median(cpu[3]).Seconds(), float64(maxRSS)/(1<<20), loadBefore, loadAvg())
}

// loadAvg returns the 1, 5 and 15 minute load averages of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// execCPU runs cmd (its standard output on /dev/null itself when
// toDevNull, not through a pipe) and returns the CPU time it used.
func execCPU(b *testing.B, cmd *exec.Cmd, toDevNull bool) time.Duration {
	b.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if toDevNull {
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer null.Close()
		cmd.Stdout = null
	}
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out.Bytes())
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

func copyTo(b *testing.B, path string, open func() (io.ReadCloser, error)) int64 {
	b.Helper()
	rc, err := open()
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	n, err := io.Copy(f, rc)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
