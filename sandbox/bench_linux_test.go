package sandbox_test

import (
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// BenchmarkStartTrue measures container start to exit of /bin/true, median
// of 50 rounds, interleaving in each round vagent's sandbox (with and
// without user namespace and overlay) and Debian's `runc run` on the same
// rootfs, each in a network namespace with loopback only (runc's default;
// vagent's NetworkNone). It reports milliseconds per variant and the ratio of vagent's
// default (user namespace + overlay) to runc run. The variant
// "vagent-nouserns-copiedbinary" is vagent-nouserns with its data
// directory inside the test binary's directory, where libcontainer copies
// the binary for every start (see binaryCopiedPerStart); without a user
// namespace because that directory is not searchable by mapped users.
// "vagent-disk" is vagent with a disk limit (Limits.Disk: RLIMIT_FSIZE and
// the watcher), reported as a ratio to vagent. The variants' order rotates
// from round to round.
// "vagent-noseccomp" is vagent without its seccomp filter: the difference
// is what the allow-list costs a start (built into a BPF program by the
// container's init each time).
func BenchmarkStartTrue(b *testing.B) {
	needRoot(b)
	rootfs := sandboxtest.BusyboxRootfs(b)
	type variant struct {
		name    string
		run     func() error
		samples []time.Duration
	}
	var variants []*variant
	for _, v := range []struct {
		name              string
		userns, overlay   bool
		nested, noSeccomp bool
		disk              int64
	}{{"vagent", true, true, false, false, 0}, {"vagent-disk", true, true, false, false, 1 << 30}, {"vagent-noseccomp", true, true, false, true, 0}, {"vagent-nouserns", false, true, false, false, 0}, {"vagent-nooverlay", true, false, false, false, 0}, {"vagent-bare", false, false, false, false, 0}, {"vagent-nouserns-copiedbinary", false, true, true, false, 0}} {
		var e *testEnv
		switch {
		case v.nested:
			e = newManagerIn(b, binaryDirTemp(b), sandbox.WithUserNamespace(false))
		case v.noSeccomp:
			e = newManager(b, sandbox.WithUserNamespace(v.userns), sandbox.WithSeccomp(false))
		default:
			e = newManager(b, sandbox.WithUserNamespace(v.userns))
		}
		// A new namespace with loopback only, as runc's default spec:
		// BenchmarkNetworkStart measures the isolated network.
		spec := sandbox.Spec{Lower: rootfs, Args: []string{"/bin/true"}, Env: pathEnv, ReadOnly: !v.overlay, Network: sandbox.NetworkNone}
		if v.disk > 0 {
			spec.Limits = &sandbox.Limits{Disk: v.disk}
		}
		variants = append(variants, &variant{name: v.name, run: func() error {
			res, err := e.m.Run(b.Context(), spec)
			if err == nil && res.ExitCode != 0 {
				err = fmt.Errorf("exit %d", res.ExitCode)
			}
			return err
		}})
	}
	if runc, err := osexec.LookPath("runc"); err == nil {
		state := sandboxtest.Dir(b)
		n := 0
		for _, withSeccomp := range []bool{false, true} {
			bundle, name := runcBundle(b, runc, rootfs, false), "runc"
			if withSeccomp {
				bundle, name = runcBundle(b, runc, rootfs, true), "runc-seccomp"
			}
			variants = append(variants, &variant{name: name, run: func() error {
				n++
				cmd := osexec.Command(runc, "--root", state, "run", "--bundle", bundle, fmt.Sprintf("bench-%d-%d", os.Getpid(), n))
				out, err := cmd.CombinedOutput()
				if err != nil {
					return fmt.Errorf("%s run: %v: %s", name, err, out)
				}
				return nil
			}})
		}
	} else {
		b.Log("runc not installed (Debian package runc): no comparison")
	}
	const rounds = 50
	b.ResetTimer()
	for r := range rounds {
		// The order rotates each round: a variant's place in the round
		// costs or saves it a few milliseconds on this VM.
		for i := range variants {
			v := variants[(r+i)%len(variants)]
			start := time.Now()
			if err := v.run(); err != nil {
				b.Fatalf("%s: %v", v.name, err)
			}
			v.samples = append(v.samples, time.Since(start))
		}
	}
	b.StopTimer()
	medians := map[string]float64{}
	for _, v := range variants {
		slices.Sort(v.samples)
		med := float64(v.samples[len(v.samples)/2]) / float64(time.Millisecond)
		medians[v.name] = med
		b.ReportMetric(med, v.name+"-ms")
	}
	if r, ok := medians["runc"]; ok {
		b.ReportMetric(medians["vagent"]/r, "vagent/runc")
		b.ReportMetric(medians["vagent"]/medians["runc-seccomp"], "vagent/runc-seccomp")
	}
	b.ReportMetric(medians["vagent-disk"]/medians["vagent"], "disk/vagent")
	b.ReportMetric(medians["vagent"]/medians["vagent-noseccomp"], "vagent/noseccomp")
}

// binaryDirTemp returns a new directory inside the test binary's own
// directory, removed when the benchmark ends.
func binaryDirTemp(b *testing.B) string {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp(filepath.Dir(exe), "bench-data-")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runcBundle writes an OCI bundle for `runc run` of /bin/true in rootfs:
// Debian runc's default spec (no user namespace, read-only rootfs, no
// seccomp), with vagent's seccomp filter when withSeccomp.
func runcBundle(b *testing.B, runc, rootfs string, withSeccomp bool) string {
	dir := sandboxtest.Dir(b)
	if out, err := osexec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
		b.Fatalf("runc spec: %v: %s", err, out)
	}
	p := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		b.Fatal(err)
	}
	spec["root"] = map[string]any{"path": rootfs, "readonly": true}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"/bin/true"}
	if withSeccomp {
		filter, err := sandbox.SeccompOCI()
		if err != nil {
			b.Fatal(err)
		}
		spec["linux"].(map[string]any)["seccomp"] = filter
	}
	if data, err = json.Marshal(spec); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}
