package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
)

// limitsProbeArg makes the binary, started as a container's process by
// probeLimits, print the limits of the cgroup it is in and exit.
const limitsProbeArg = "vagent-sandbox-limits-probe"

// limitFiles are the cgroup files the probe reads, per hierarchy version:
// controller → files.
var limitFiles = map[bool]map[string][]string{
	true: {"": {"memory.max", "memory.swap.max", "pids.max", "cpu.max", "cpu.weight"}},
	false: {
		"memory": {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"},
		"pids":   {"pids.max"},
		"cpu":    {"cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares"},
	},
}

// limitsProbeMain runs in the container: it prints "file=value" for every
// limit file of its own cgroup(s), as /proc/self/cgroup names them.
func limitsProbeMain() {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		fmt.Println("error=" + err.Error())
		os.Exit(1)
	}
	v2 := cgroups.IsCgroup2UnifiedMode()
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for ctrl, files := range limitFiles[v2] {
			var dir string
			switch {
			case v2 && parts[0] == "0":
				dir = path.Join("/sys/fs/cgroup", parts[2])
			case !v2 && parts[0] != "0" && hasController(parts[1], ctrl):
				dir = path.Join("/sys/fs/cgroup", ctrl, parts[2])
			default:
				continue
			}
			for _, f := range files {
				if v, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
					fmt.Printf("%s=%s\n", f, strings.TrimSpace(string(v)))
				}
			}
		}
	}
	helperExit()
}

func hasController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}

// expectedLimitFiles is what the probe must see for limits r (as
// resources() set them), per file.
func expectedLimitFiles(r Limits, v2, swap bool) map[string]string {
	w := map[string]string{}
	if r.Memory > 0 {
		memsw := r.MemorySwap
		if memsw == 0 {
			memsw = r.Memory
		}
		if v2 {
			w["memory.max"] = strconv.FormatInt(r.Memory, 10)
			if swap {
				if memsw == -1 {
					w["memory.swap.max"] = "max"
				} else {
					w["memory.swap.max"] = strconv.FormatInt(memsw-r.Memory, 10)
				}
			}
		} else {
			w["memory.limit_in_bytes"] = strconv.FormatInt(r.Memory, 10)
			if swap && memsw > 0 {
				w["memory.memsw.limit_in_bytes"] = strconv.FormatInt(memsw, 10)
			}
		}
	}
	if r.Pids > 0 {
		w["pids.max"] = strconv.FormatInt(r.Pids, 10)
	}
	if r.CPUQuota > 0 {
		q := strconv.FormatInt(int64(r.CPUQuota*100000), 10)
		if v2 {
			w["cpu.max"] = q + " 100000"
		} else {
			w["cpu.cfs_quota_us"] = q
		}
	}
	if r.CPUWeight > 0 {
		if v2 {
			w["cpu.weight"] = strconv.FormatUint(r.CPUWeight, 10)
		} else {
			w["cpu.shares"] = strconv.FormatUint(weightToShares(r.CPUWeight), 10)
		}
	}
	return w
}

// probeLimits runs what a build runs, with limits l: a Manager on a
// directory under dataDir sets up its cgroups, refuses limits it cannot
// apply, and starts a container (this binary, bind-mounted into an empty
// root) that reads its cgroup's limits from inside. It returns what the
// container saw, or why it could not run.
func probeLimits(ctx context.Context, dataDir string, l Limits, opts ...Option) (string, error) {
	dir, err := os.MkdirTemp(dataDir, "check-limits-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	// The container's mapped root traverses it (see checkSearchable).
	if err := os.Chmod(dir, 0o711); err != nil {
		return "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	m, err := New(filepath.Join(dir, "sandbox"), opts...)
	if err != nil {
		return "", err
	}
	defer m.Close()
	// An empty root with this binary and, for a dynamically linked one,
	// the host's library directories.
	lower := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		return "", err
	}
	if s := int(m.lowerShift()); s != 0 { // rootless: container root's
		if err := os.Chown(lower, s, s); err != nil {
			return "", err
		}
	}
	spec := Spec{
		Lower:   lower,
		Args:    []string{"/vagent", limitsProbeArg},
		Network: NetworkNone,
		Limits:  &l,
		Mounts:  []Mount{{Source: exe, Target: "/vagent", ReadOnly: true}},
	}
	for _, d := range []string{"/lib", "/lib64", "/usr"} {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			t, err := os.Readlink(d)
			if err != nil {
				return "", err
			}
			if err := os.Symlink(t, filepath.Join(lower, d)); err != nil {
				return "", err
			}
		case fi.IsDir():
			spec.Mounts = append(spec.Mounts, Mount{Source: d, Target: d, ReadOnly: true})
		}
	}
	var out bytes.Buffer
	spec.Output = &out
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := m.Run(ctx, spec)
	if err != nil {
		return "", err
	}
	if res.ExitCode != 0 {
		return "", fmt.Errorf("probe container exited %d: %s", res.ExitCode, strings.TrimSpace(out.String()))
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			got[k] = v
		}
	}
	var wrong, seen []string
	want := expectedLimitFiles(l, m.cg.v2, m.cg.swap)
	for _, f := range sortedFiles(want) {
		if got[f] != want[f] {
			wrong = append(wrong, fmt.Sprintf("%s is %q, want %q", f, got[f], want[f]))
		}
		seen = append(seen, f+"="+got[f])
	}
	if len(wrong) > 0 {
		return "", errors.New("limits not in effect inside the build: " + strings.Join(wrong, ", "))
	}
	return fmt.Sprintf("a build container in %s saw %s", m.cg.parent, strings.Join(seen, ", ")), nil
}

func sortedFiles(m map[string]string) []string {
	var out []string
	for _, fs := range limitFiles[true] {
		out = append(out, fs...)
	}
	for _, c := range []string{"memory", "pids", "cpu"} {
		out = append(out, limitFiles[false][c]...)
	}
	var keep []string
	for _, f := range out {
		if _, ok := m[f]; ok && !slices.Contains(keep, f) {
			keep = append(keep, f)
		}
	}
	return keep
}
