package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

func TestWeightToShares(t *testing.T) {
	// The conversion must invert libcontainer's shares -> weight mapping.
	for _, w := range []uint64{1, 50, 100, 1000, 10000} {
		if back := cgroups.ConvertCPUSharesToCgroupV2Value(weightToShares(w)); back != w {
			t.Errorf("weight %d -> shares %d -> weight %d", w, weightToShares(w), back)
		}
	}
}

func TestDefaultWeightIsDefaultShares(t *testing.T) {
	if s := weightToShares(100); s < 1000 || s > 1050 {
		t.Errorf("weight 100 -> %d shares, want about 1024", s)
	}
}

func TestResources(t *testing.T) {
	r := resources(Limits{Memory: 100, Pids: 7, CPUQuota: 1.5, CPUWeight: 100}, false, true)
	if r.Memory != 100 || r.MemorySwap != 100 || *r.PidsLimit != 7 || r.CpuQuota != 150000 || r.CpuPeriod != 100000 || r.CpuShares == 0 || r.CpuWeight != 0 {
		t.Errorf("v1 resources %+v", r)
	}
	r = resources(Limits{Memory: 100, MemorySwap: -1, CPUWeight: 100}, true, true)
	if r.MemorySwap != -1 || r.CpuWeight != 100 || r.CpuShares != 0 {
		t.Errorf("v2 resources %+v", r)
	}
	if r = resources(Limits{Memory: 100}, false, false); r.MemorySwap != 0 {
		t.Errorf("without swap accounting: memory+swap %d", r.MemorySwap)
	}
}

func TestSpecValidateLimits(t *testing.T) {
	for _, l := range []Limits{{Memory: -1}, {MemorySwap: 10}, {Memory: 10, MemorySwap: 5}, {CPUWeight: 20000}, {CPUQuota: -1}} {
		if err := l.validate(); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%+v: %v", l, err)
		}
	}
	for _, l := range []Limits{{}, {Memory: 10, MemorySwap: -1}, {Memory: 10, MemorySwap: 20, Pids: 5, CPUWeight: 1, CPUQuota: 0.1}} {
		if err := l.validate(); err != nil {
			t.Errorf("%+v: %v", l, err)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/trail\04`: `/trail\04`} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBinaryCopiedPerStart(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"opt/vagent/data/sandbox/state", "usr/local/bin", "var/lib/vagent/sandbox/state"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A symlinked data directory that resolves into the binary's directory.
	if err := os.Symlink(filepath.Join(root, "opt/vagent/data"), filepath.Join(root, "data-link")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		exe, state string
		want       bool
	}{
		{"usr/local/bin/vagent", "var/lib/vagent/sandbox/state", false},
		{"opt/vagent/vagent", "opt/vagent/data/sandbox/state", true},
		{"opt/vagent/vagent", "data-link/sandbox/state", true},
		{"opt/vagent/data/sandbox/state/vagent", "opt/vagent/data/sandbox/state", true},
		{"opt/vagent-bin/vagent", "opt/vagent/data/sandbox/state", false},
		{"opt/vagent/vagent", "usr/local/bin", false},
	} {
		if got := binaryCopiedPerStart(filepath.Join(root, c.exe), filepath.Join(root, c.state)); got != c.want {
			t.Errorf("binary %s, state %s: %v, want %v", c.exe, c.state, got, c.want)
		}
	}
}

// TestSpecIDMappedReadOnly: a writable idmapped mount would let container
// root write as host root; it is refused, a read-only one is not.
func TestSpecIDMappedReadOnly(t *testing.T) {
	spec := Spec{Lower: "/lower", Args: []string{"true"}}
	spec.Mounts = []Mount{{Source: "/src", Target: "/dst", IDMapped: true}}
	if err := spec.validate(); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("writable idmapped mount: %v", err)
	}
	spec.Mounts[0].ReadOnly = true
	if err := spec.validate(); err != nil {
		t.Errorf("read-only idmapped mount: %v", err)
	}
}

// TestPidnsMembersNeverTheAgentsNamespace: a pid that is in the agent's
// own pid namespace (a reaped container init's pid reused by a host
// process or thread) yields no processes to signal.
func TestPidnsMembersNeverTheAgentsNamespace(t *testing.T) {
	for _, pid := range []int{os.Getpid(), 1, unix.Gettid()} {
		if got := pidnsMembers(pid); len(got) > 0 {
			t.Errorf("pidnsMembers(%d) = %d host processes, want none", pid, len(got))
		}
	}
}
