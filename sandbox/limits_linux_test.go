package sandbox_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// readLimitsScript prints, from inside a container, the cgroup it is in
// and the limit files the test asks for, as "name=value" lines. $1 is "2"
// on cgroup v2; each further argument is controller:file.
const readLimitsScript = `
v=$1; shift
if [ "$v" = 2 ]; then
	cg=$(sed -n 's/^0:://p' /proc/self/cgroup)
	echo "cgroup=/sys/fs/cgroup$cg"
fi
for cf in "$@"; do
	c=${cf%%:*}; f=${cf#*:}
	if [ "$v" = 2 ]; then
		d=/sys/fs/cgroup$cg
	else
		p=$(grep -E "^[0-9]+:([^:]*,)?$c(,[^:]*)?:" /proc/self/cgroup | cut -d: -f3)
		d=/sys/fs/cgroup/$c$p
		echo "cgroup=$d"
	fi
	echo "$f=$(cat $d/$f)"
done`

// TestLimitsObservedInside applies each limit to a run and reads it back
// from inside the container, from the cgroup the container's own
// /proc/self/cgroup names; that cgroup is gone after the run. Wherever the
// agent stands (see the VM harness, contrib/vm), the build sees its limits.
func TestLimitsObservedInside(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	v2 := cgroups.IsCgroup2UnifiedMode()
	swap := v2 || fileExistsT("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	const mib = 1 << 20
	type want map[string]string // file → value
	tests := []struct {
		name   string
		limits sandbox.Limits
		v1, v2 want
		// needsSwap: refused with ErrLimitUnavailable without swap accounting.
		needsSwap bool
	}{
		{name: "memory", limits: sandbox.Limits{Memory: 64 * mib, MemorySwap: -1},
			v1: want{"memory:memory.limit_in_bytes": "67108864"},
			v2: want{"memory:memory.max": "67108864", "memory:memory.swap.max": "max"}},
		{name: "memory without swap", limits: sandbox.Limits{Memory: 64 * mib},
			v1: want{"memory:memory.limit_in_bytes": "67108864"},
			v2: want{"memory:memory.max": "67108864", "memory:memory.swap.max": "0"}},
		{name: "memory+swap", limits: sandbox.Limits{Memory: 64 * mib, MemorySwap: 96 * mib}, needsSwap: true,
			v1: want{"memory:memory.limit_in_bytes": "67108864", "memory:memory.memsw.limit_in_bytes": "100663296"},
			v2: want{"memory:memory.max": "67108864", "memory:memory.swap.max": "33554432"}},
		{name: "pids", limits: sandbox.Limits{Pids: 50},
			v1: want{"pids:pids.max": "50"},
			v2: want{"pids:pids.max": "50"}},
		{name: "cpu quota", limits: sandbox.Limits{CPUQuota: 0.5},
			v1: want{"cpu:cpu.cfs_quota_us": "50000", "cpu:cpu.cfs_period_us": "100000"},
			v2: want{"cpu:cpu.max": "50000 100000"}},
		{name: "cpu weight", limits: sandbox.Limits{CPUWeight: 50},
			v1: want{"cpu:cpu.shares": "weight 50"},
			v2: want{"cpu:cpu.weight": "50"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, ver := tt.v1, "1"
			if v2 {
				w, ver = tt.v2, "2"
			}
			args := []string{"/bin/sh", "-c", readLimitsScript, "sh", ver}
			for f := range w {
				args = append(args, f)
			}
			var out sandboxtest.Buffer
			limits := tt.limits
			res, err := e.m.Run(t.Context(), sandbox.Spec{Lower: rootfs, Args: args, Env: pathEnv, Output: &out, Limits: &limits})
			if tt.needsSwap && !swap {
				if !errors.Is(err, sandbox.ErrLimitUnavailable) {
					t.Fatalf("no swap accounting: Run = %v, want ErrLimitUnavailable", err)
				}
				t.Logf("refused as it should be without swap accounting: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 0 {
				t.Fatalf("exit %d: %s", res.ExitCode, out.String())
			}
			got := map[string]string{}
			var dirs []string
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				k, v, _ := strings.Cut(line, "=")
				if k == "cgroup" {
					dirs = append(dirs, v)
					continue
				}
				got[k] = v
			}
			for f, v := range w {
				_, file, _ := strings.Cut(f, ":")
				if weight, ok := strings.CutPrefix(v, "weight "); ok {
					shares, err := strconv.ParseUint(got[file], 10, 64)
					if err != nil || strconv.FormatUint(cgroups.ConvertCPUSharesToCgroupV2Value(shares), 10) != weight {
						t.Errorf("%s = %q inside, want shares for weight %s", file, got[file], weight)
					}
					continue
				}
				if got[file] != v {
					t.Errorf("%s = %q inside, want %q\n%s", file, got[file], v, out.String())
				}
			}
			t.Logf("observed inside: %v", got)
			if len(dirs) == 0 {
				t.Fatalf("the container did not name its cgroup:\n%s", out.String())
			}
			for _, d := range dirs {
				if !strings.Contains(d, "/"+e.parent+"/") {
					t.Errorf("run cgroup %s is not below the Manager's parent %s", d, e.parent)
				}
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("run cgroup %s still there after the run (%v)", d, err)
				}
			}
		})
	}
}

func fileExistsT(p string) bool {
	_, err := os.Stat(filepath.Clean(p))
	return err == nil
}

// TestLimitUnavailableRefused asks for each limit and expects it applied
// when its controller is available to the agent (cgroup v2: listed in the
// agent's cgroup.controllers; v1: its hierarchy mounted) and refused with
// ErrLimitUnavailable, naming the controller, when not (the VM harness's
// pids-only placement).
func TestLimitUnavailableRefused(t *testing.T) {
	avail := ownControllers(t)
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	for _, tt := range []struct {
		ctrl   string
		limits sandbox.Limits
	}{
		{"memory", sandbox.Limits{Memory: 64 << 20}},
		{"pids", sandbox.Limits{Pids: 50}},
		{"cpu", sandbox.Limits{CPUQuota: 0.5}},
	} {
		t.Run(tt.ctrl, func(t *testing.T) {
			var out sandboxtest.Buffer
			res, err := e.m.Run(t.Context(), sandbox.Spec{Lower: rootfs, Args: []string{"/bin/true"}, Env: pathEnv, Output: &out, Limits: &tt.limits})
			if avail[tt.ctrl] {
				if err != nil || res.ExitCode != 0 {
					t.Fatalf("controller %s available: Run = %+v, %v", tt.ctrl, res, err)
				}
				return
			}
			if !errors.Is(err, sandbox.ErrLimitUnavailable) || !strings.Contains(err.Error(), `controller "`+tt.ctrl+`"`) {
				t.Fatalf("controller %s not delegated: Run = %v, want ErrLimitUnavailable naming it", tt.ctrl, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// ownControllers returns the controllers available in the test process's
// cgroup v2 (its parent's when a Manager already moved it into its leaf).
func ownControllers(t *testing.T) map[string]bool {
	m := map[string]bool{}
	if !cgroups.IsCgroup2UnifiedMode() {
		for _, c := range []string{"memory", "pids", "cpu"} {
			m[c] = fileExistsT(filepath.Join("/sys/fs/cgroup", c))
		}
		return m
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var own string
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			own = p
		}
	}
	if filepath.Base(own) == "vagent-agent" {
		own = filepath.Dir(own)
	}
	c, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", own, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(c)) {
		m[f] = true
	}
	return m
}
