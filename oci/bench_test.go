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
	store, err := oci.NewStore(os.Getenv(envChildDir))
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
//	skopeo-umoci   skopeo copy to an OCI layout, then umoci unpack (skopeo
//	               recompresses the small zstd and uncompressed layers to
//	               gzip, which umoci 0.4.7 needs: a few KiB)
//	floor          every layer blob decompressed to /dev/null (pigz, zstd)
//	               plus tar -x of the same uncompressed bytes
//
// It reports the medians, the ratios vagent/peer and vagent's peak RSS.
// Targets: <= 0.5x skopeo-umoci, <= 1.5x floor, < 100 MiB. One run of the
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

	var vagentT, peerT, floorT []time.Duration
	var maxRSS int64
	for r := range rounds {
		dir := filepath.Join(work, fmt.Sprintf("round%d", r))

		// vagent, in a child process.
		cmd := exec.CommandContext(b.Context(), self, "-test.run=^TestBenchPullChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envChildRef+"="+ref, envChildDir+"="+filepath.Join(dir, "store"))
		if p := os.Getenv(envChildProfile); p == "" || r != rounds-1 {
			cmd.Env = append(cmd.Env, envChildProfile+"=")
		}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		vagentT = append(vagentT, time.Since(start))
		if err != nil {
			b.Fatalf("vagent pull: %v\n%s", err, out)
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			maxRSS = max(maxRSS, ru.Maxrss*1024)
		}

		// skopeo copy + umoci unpack.
		layout := filepath.Join(dir, "layout")
		start = time.Now()
		run(b, skopeo, "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", "--dest-compress-format=gzip",
			"docker://"+ref, "oci:"+layout+":"+testkit.ArchLikeTag)
		run(b, umoci, "unpack", "--image", layout+":"+testkit.ArchLikeTag, filepath.Join(dir, "bundle"))
		peerT = append(peerT, time.Since(start))

		// The floor.
		floorDir := filepath.Join(dir, "floor")
		if err := os.Mkdir(floorDir, 0o755); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		for _, bl := range blobs {
			switch bl.mt {
			case types.OCILayer, types.DockerLayer:
				runToDevNull(b, pigz, "-dc", bl.path)
			case types.OCILayerZStd:
				runToDevNull(b, zstd, "-dcq", bl.path)
			default: // uncompressed: nothing to inflate
			}
		}
		for _, bl := range blobs {
			run(b, tarBin, "-x", "-p", "--numeric-owner", "-f", bl.tar, "-C", floorDir)
		}
		floorT = append(floorT, time.Since(start))

		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.Logf("round %d: vagent %v, skopeo+umoci %v, floor %v", r+1,
			vagentT[r].Round(time.Millisecond), peerT[r].Round(time.Millisecond), floorT[r].Round(time.Millisecond))
	}

	v, p, f := median(vagentT), median(peerT), median(floorT)
	b.ReportMetric(0, "ns/op") // the figures below are the result
	b.ReportMetric(v.Seconds(), "vagent-s")
	b.ReportMetric(p.Seconds(), "skopeo-umoci-s")
	b.ReportMetric(f.Seconds(), "floor-s")
	b.ReportMetric(v.Seconds()/p.Seconds(), "ratio-vs-skopeo-umoci")
	b.ReportMetric(v.Seconds()/f.Seconds(), "ratio-vs-floor")
	b.ReportMetric(float64(maxRSS)/(1<<20), "vagent-peak-MiB")
	b.Logf("Arch-like image: %d layers, %.0f MiB compressed, %.0f MiB uncompressed; medians of %d: "+
		"vagent %.2fs, skopeo+umoci %.2fs (%.2fx, target <= 0.5x), floor %.2fs (%.2fx, target <= 1.5x), vagent peak RSS %.0f MiB (target < 100)",
		len(blobs), float64(compressed)/(1<<20), float64(uncompressed)/(1<<20), rounds,
		v.Seconds(), p.Seconds(), v.Seconds()/p.Seconds(), f.Seconds(), v.Seconds()/f.Seconds(), float64(maxRSS)/(1<<20))
}

// runToDevNull runs a program with its standard output on /dev/null
// itself (no pipe through this process).
func runToDevNull(b *testing.B, name string, args ...string) {
	b.Helper()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	cmd := exec.CommandContext(b.Context(), name, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = null, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, stderr.Bytes())
	}
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
