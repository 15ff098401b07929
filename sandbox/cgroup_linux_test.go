package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOwnCgroupV2(t *testing.T) {
	const (
		hostMount = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
		// A container runtime that bind-mounts its cgroup subtree.
		subtreeMount = "30 25 0:26 /kubepods/pod1/ctr /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
		hybridMount  = "31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
	)
	tests := []struct {
		name, self, mountinfo, want, wantErr string
	}{
		{name: "systemd service", self: "0::/system.slice/vagent.service\n", mountinfo: hostMount, want: "/system.slice/vagent.service"},
		{name: "private namespace root", self: "0::/\n", mountinfo: hostMount, want: "/"},
		{name: "kubernetes pod, host namespace", self: "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope\n", mountinfo: hostMount,
			want: "/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope"},
		{name: "subtree mounted", self: "0::/kubepods/pod1/ctr/sub\n", mountinfo: subtreeMount, want: "/sub"},
		{name: "v1 lines ignored", self: "4:memory:/x\n0::/a\n", mountinfo: hostMount, want: "/a"},
		{name: "escaped mount point", self: "0::/a\n", mountinfo: `30 25 0:26 / /sys/fs/cg\040x rw - cgroup2 cgroup2 rw` + "\n", wantErr: "no cgroup2 filesystem mounted"},
		{name: "outside the namespace", self: "0::/../other\n", mountinfo: hostMount, wantErr: "outside this cgroup namespace"},
		{name: "outside the mounted subtree", self: "0::/elsewhere\n", mountinfo: subtreeMount, wantErr: "not below the cgroup2 mount"},
		{name: "no v2 line", self: "4:memory:/x\n", mountinfo: hostMount, wantErr: "no cgroup v2 entry"},
		{name: "v2 only at unified (hybrid)", self: "0::/a\n", mountinfo: hybridMount, wantErr: "no cgroup2 filesystem mounted at /sys/fs/cgroup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ownCgroupV2([]byte(tt.self), []byte(tt.mountinfo), "/sys/fs/cgroup")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// fakeCgroup creates a cgroup directory in a fake tree with the given
// available controllers, processes and type ("" for the real root, which
// has no cgroup.type).
func fakeCgroup(t *testing.T, dir, controllers, procs, typ string) {
	t.Helper()
	files := map[string]string{
		"cgroup.controllers":     controllers,
		"cgroup.subtree_control": "",
		"cgroup.procs":           procs,
	}
	if typ != "" {
		files["cgroup.type"] = typ
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, c := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPlanV2(t *testing.T) {
	mnt := t.TempDir()
	fakeCgroup(t, mnt, "cpu memory pids", "1\n", "")
	fakeCgroup(t, filepath.Join(mnt, "ns"), "cpu memory pids", "", "domain")
	tests := []struct {
		name, mnt, own, home, leaf string
	}{
		{"real root", mnt, "/", "/", ""},
		{"namespace root", filepath.Join(mnt, "ns"), "/", "/", "/" + agentLeaf},
		{"systemd service", mnt, "/system.slice/vagent.service", "/system.slice/vagent.service", "/system.slice/vagent.service/" + agentLeaf},
		{"already in the leaf", mnt, "/system.slice/vagent.service/" + agentLeaf, "/system.slice/vagent.service", ""},
		{"namespace root, already moved", filepath.Join(mnt, "ns"), "/" + agentLeaf, "/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home, leaf := planV2(tt.mnt, tt.own)
			if home != tt.home || leaf != tt.leaf {
				t.Fatalf("planV2(%s) = %q, %q; want %q, %q", tt.own, home, leaf, tt.home, tt.leaf)
			}
		})
	}
}

func TestSetupCgroupV2(t *testing.T) {
	tests := []struct {
		name        string
		own         string
		controllers string // available in the agent's cgroup
		typ         string
		swap        bool
		want        string // describe()
		parent      string
		moved       string
		wantErr     string
	}{
		{name: "delegated service", own: "/svc", controllers: "cpuset cpu io memory pids", typ: "domain", swap: true,
			want: "memory, pids, cpu, memory+swap", parent: "/svc/p", moved: "/svc/" + agentLeaf},
		{name: "no swap accounting", own: "/svc", controllers: "cpu memory pids", typ: "domain",
			want: "memory, pids, cpu", parent: "/svc/p", moved: "/svc/" + agentLeaf},
		{name: "only pids delegated", own: "/svc", controllers: "pids", typ: "domain",
			want: "pids", parent: "/svc/p", moved: "/svc/" + agentLeaf},
		{name: "nothing delegated", own: "/svc", controllers: "", typ: "domain",
			want: "none", parent: "/svc/p", moved: "/svc/" + agentLeaf},
		{name: "threaded", own: "/svc", controllers: "pids", typ: "threaded", wantErr: `"threaded", not a domain cgroup`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mnt := t.TempDir()
			fakeCgroup(t, filepath.Join(mnt, tt.own), tt.controllers, "", tt.typ)
			// The kernel creates the parent's files; a fake tree has them
			// in advance.
			parent := filepath.Join(mnt, tt.own, "p")
			fakeCgroup(t, parent, tt.controllers, "", "domain")
			if tt.swap {
				if err := os.WriteFile(filepath.Join(parent, "memory.swap.max"), []byte("max\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s, err := setupCgroupV2(mnt, tt.own, "p")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.describe(); got != tt.want || s.parent != tt.parent || s.moved != tt.moved {
				t.Fatalf("setup: controllers %q parent %q moved %q; want %q %q %q", got, s.parent, s.moved, tt.want, tt.parent, tt.moved)
			}
		})
	}
}

func TestCheckLimits(t *testing.T) {
	full := &cgroupSetup{parent: "/p", controllers: map[string]bool{"memory": true, "pids": true, "cpu": true}, swap: true}
	pidsOnly := &cgroupSetup{parent: "/p", controllers: map[string]bool{"pids": true}}
	noSwap := &cgroupSetup{parent: "/p", controllers: map[string]bool{"memory": true, "pids": true, "cpu": true}}
	all := Limits{Memory: 1 << 30, MemorySwap: 2 << 30, Pids: 100, CPUWeight: 50, CPUQuota: 1}
	tests := []struct {
		name    string
		s       *cgroupSetup
		l       Limits
		wantErr string
	}{
		{"everything available", full, all, ""},
		{"no limits", pidsOnly, Limits{}, ""},
		{"pids where only pids", pidsOnly, Limits{Pids: 10}, ""},
		{"memory without controller", pidsOnly, Limits{Memory: 1 << 20}, `memory (controller "memory")`},
		{"cpu without controller", pidsOnly, Limits{CPUQuota: 0.5, CPUWeight: 10}, `cpu weight (controller "cpu"), cpu quota (controller "cpu")`},
		{"swap without accounting", noSwap, all, "memory+swap (no swap accounting)"},
		{"unlimited swap without accounting", noSwap, Limits{Memory: 1 << 20, MemorySwap: -1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.checkLimits(tt.l)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrLimitUnavailable) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want ErrLimitUnavailable containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMoveProcsGivesUp(t *testing.T) {
	// A fake tree's cgroup.procs never empties, as a cgroup that keeps
	// forking would not: moving gives up instead of looping.
	mnt := t.TempDir()
	fakeCgroup(t, filepath.Join(mnt, "svc"), "", "42\n", "domain")
	err := moveProcs(filepath.Join(mnt, "svc"), filepath.Join(mnt, "svc", agentLeaf))
	if err == nil || !strings.Contains(err.Error(), "keep appearing") {
		t.Fatalf("got %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(mnt, "svc", agentLeaf, "cgroup.procs")); string(data) != "42" {
		t.Fatalf("leaf cgroup.procs = %q, want the pid written", data)
	}
}
