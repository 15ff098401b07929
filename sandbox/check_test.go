package sandbox

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func goodFacts() hostFacts {
	return hostFacts{
		kernel: "6.1.0-18-amd64", root: true,
		cgroupVersion: 2, controllers: map[string]bool{"memory": true, "pids": true, "cpu": true},
		swapAccounting: true, seccompBuilt: true, seccompKernel: true,
		idBase: 100000, idSize: 65536, dataDir: "/var/lib/vagent", freeBytes: 10 << 30,
		limits:  "a build container in /vagent-x saw memory.max=536870912",
		network: "pasta gave a new network namespace interface eth0 in 40ms",
	}
}

func TestEvaluate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(*hostFacts)
		missing map[string]string // requirement -> detail substring
	}{
		{"all good", func(*hostFacts) {}, nil},
		{"old kernel", func(f *hostFacts) { f.kernel = "5.15.0-91-generic" }, map[string]string{"kernel": "older than 5.19"}},
		{"garbled kernel", func(f *hostFacts) { f.kernel = "x" }, map[string]string{"kernel": "cannot parse"}},
		{"no userns", func(f *hostFacts) { f.userns = errors.New("operation not permitted") }, map[string]string{"user namespaces": "operation not permitted"}},
		{"id conflict", func(f *hostFacts) { f.idConflicts = []string{"passwd alice (100500)"} }, map[string]string{"id range": "alice"}},
		{"no overlay", func(f *hostFacts) { f.overlay = errors.New("no such device") }, map[string]string{"overlayfs": "no such device"}},
		{"no idmap", func(f *hostFacts) { f.idmapped = errors.New("invalid argument") }, map[string]string{"idmapped lower": "support idmapped mounts"}},
		{"no cgroups", func(f *hostFacts) { f.cgroupVersion = 0 }, map[string]string{"cgroups": "no cgroup filesystem"}},
		{"v2 without pids", func(f *hostFacts) { delete(f.controllers, "pids") }, map[string]string{"cgroups": "lacks controllers: pids"}},
		{"v1 without devices", func(f *hostFacts) { f.cgroupVersion = 1 }, map[string]string{"cgroups": "devices"}},
		{"no isolated network", func(f *hostFacts) {
			f.networkErr = fmt.Errorf("%w: pasta not found (install passt)", ErrNetworkUnavailable)
		}, map[string]string{"isolated network": "install passt"}},
		{"seccomp not built", func(f *hostFacts) { f.seccompBuilt = false }, map[string]string{"seccomp": "-tags seccomp"}},
		{"seccomp not in kernel", func(f *hostFacts) { f.seccompKernel = false }, map[string]string{"seccomp": "kernel"}},
		{"disk full", func(f *hostFacts) { f.freeBytes = 100 << 20 }, map[string]string{"disk space": "100.0 MiB free, need at least 2.0 GiB"}},
		{"read-only data dir", func(f *hostFacts) {
			f.dataDirErr = errors.New("/var/lib/vagent is on a read-only file system")
			f.overlay, f.idmapped, f.limitsErr, f.freeErr = errNotTried, errNotTried, errNotTried, errNotTried
		}, map[string]string{"data dir": "read-only file system", "overlayfs": "not tried: the data dir is not writable",
			"idmapped lower": "not tried", "build limits": "not tried", "disk space": "not tried"}},
		{"limit not delegated", func(f *hostFacts) {
			f.limitsErr = fmt.Errorf("%w: memory (controller \"memory\") not available", ErrLimitUnavailable)
		}, map[string]string{"build limits": `memory (controller "memory")`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := goodFacts()
			tc.change(&f)
			got := map[string]string{}
			for _, r := range evaluate(f) {
				if !r.OK {
					got[r.Name] = r.Detail
				}
			}
			if len(got) != len(tc.missing) {
				t.Errorf("missing %v, want %v", got, tc.missing)
			}
			for name, sub := range tc.missing {
				if !strings.Contains(got[name], sub) {
					t.Errorf("%s: detail %q lacks %q", name, got[name], sub)
				}
			}
		})
	}
}

// TestProbeDirOf: the probes run in the data dir, or the nearest existing
// directory above it; a read-only or non-directory data dir is an error.
func TestProbeDirOf(t *testing.T) {
	dir := t.TempDir()
	if got, err := probeDirOf(dir); got != dir || err != nil {
		t.Errorf("existing: %q, %v", got, err)
	}
	if got, err := probeDirOf(dir + "/a/b/c"); got != dir || err != nil {
		t.Errorf("missing: %q, %v; want %q", got, err, dir)
	}
	file := dir + "/file"
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := probeDirOf(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file: %v", err)
	}
	if _, err := probeDirOf(file + "/sub"); err == nil {
		t.Error("below a file: no error")
	}
	if _, err := os.Stat(dir + "/a"); !errors.Is(err, os.ErrNotExist) {
		t.Error("probeDirOf created a directory")
	}
	if os.Geteuid() != 0 { // root may write anywhere (W_OK); CheckHost's test covers a read-only mount
		ro := dir + "/ro"
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		if _, err := probeDirOf(ro); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Errorf("read-only: %v", err)
		}
	}
}

func TestParseKernel(t *testing.T) {
	for in, want := range map[string][2]int{"6.18.44-fc-v782": {6, 18}, "5.19.0": {5, 19}, "6.1-rc1": {6, 1}, "4.19.0+": {4, 19}} {
		if got, ok := parseKernel(in); !ok || got != want {
			t.Errorf("parseKernel(%q) = %v %v, want %v", in, got, ok, want)
		}
	}
}
