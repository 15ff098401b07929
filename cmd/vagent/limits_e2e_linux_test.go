package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// limitsBuild is a PKGBUILD whose build() prints, from inside the build,
// the cgroup it runs in and that cgroup's limit files.
const limitsBuild = `
build() {
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    d=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
    echo "CGROUP $d"
    for f in memory.max memory.swap.max pids.max cpu.max; do echo "LIMIT $f=$(cat "$d/$f")"; done
  else
    for cf in memory:memory.limit_in_bytes memory:memory.memsw.limit_in_bytes pids:pids.max cpu:cpu.cfs_quota_us; do
      c=${cf%%:*}; f=${cf#*:}
      p=$(grep -E "^[0-9]+:([^:]*,)?$c(,[^:]*)?:" /proc/self/cgroup | cut -d: -f3)
      echo "CGROUP /sys/fs/cgroup/$c$p"
      echo "LIMIT $f=$(cat "/sys/fs/cgroup/$c$p/$f")"
    done
  fi
}
`

// TestRunBuildLimits runs `vagent run` with build_limits against the test
// stack: one real build whose PKGBUILD reads its limits from inside the
// build. Each limit is in effect there, the package is published, and the
// build's cgroups are gone once the agent stopped. The VM harness
// (contrib/vm) runs it for each placement of the agent on cgroup v2.
func TestRunBuildLimits(t *testing.T) {
	t.Parallel() // own stack, data dir and ports: runs beside TestRunEndToEnd
	if !sandbox.SeccompSupported {
		testkit.Unavailable(t, "vagent run needs a binary built with -tags seccomp (make test builds it so)")
	}
	testkit.RequireRoot(t)
	testkit.RequireTool(t, testkit.RegistryBinary, "docker-registry")
	bin := agentBinary(t)
	dir, err := os.MkdirTemp("", "vagent-limits-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Minute)
	defer cancel()
	st, err := testkit.StartStack(ctx, filepath.Join(dir, "stack"), nil)
	if err != nil {
		if testkit.InCI() {
			t.Fatal(err)
		}
		t.Skipf("test stack unavailable: %v", err)
	}
	defer st.Close()
	const arch = "x86_64"
	id, err := st.AddURLTarget("limits", "e2e", arch, testkit.DemoPKGBUILD("e2e-limits", "1.0")+limitsBuild)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	yaml := st.AgentYAML(filepath.Join(dir, "data"), arch, 1, time.Second) +
		"build_limits:\n  memory: 768MiB\n  memory_swap: 1GiB\n  pids: 2048\n  cpus: 1.5\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out sandboxtest.Buffer
	cmd := exec.Command(bin, "run", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	done := make(chan error, 1)
	go func() { _, err := st.WaitLogs(ctx, 1); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v\nagent output:\n%s", err, out.String())
		}
	case err := <-exited:
		t.Fatalf("agent exited early: %v\n%s", err, out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("agent did not stop within 2 minutes of SIGTERM\n%s", out.String())
	}

	logs := st.Server.Logs()
	if len(logs) != 1 || logs[0].TargetID != id || logs[0].ExitCode != 0 {
		t.Fatalf("logs %+v, want one successful build of target %d\nagent output:\n%s", logs, id, out.String())
	}
	got, cgroupDirs := map[string]string{}, map[string]bool{}
	for _, line := range strings.Split(string(logs[0].Content), "\n") {
		if kv, ok := strings.CutPrefix(line, "LIMIT "); ok {
			k, v, _ := strings.Cut(kv, "=")
			got[k] = v
		}
		if d, ok := strings.CutPrefix(line, "CGROUP "); ok {
			cgroupDirs[d] = true
		}
	}
	want := map[string]string{ // 768 MiB, 1 GiB memory+swap, 2048 pids, 1.5 CPUs
		"memory.limit_in_bytes": "805306368", "memory.memsw.limit_in_bytes": "1073741824", "pids.max": "2048", "cpu.cfs_quota_us": "150000",
	}
	if _, v2 := got["memory.max"]; v2 {
		want = map[string]string{"memory.max": "805306368", "memory.swap.max": "268435456", "pids.max": "2048", "cpu.max": "150000 100000"}
	}
	for f, v := range want {
		if got[f] != v {
			t.Errorf("inside the build %s = %q, want %q", f, got[f], v)
		}
	}
	t.Logf("limits seen inside the build: %v", got)
	if len(cgroupDirs) == 0 {
		t.Errorf("the build did not name its cgroup:\n%s", logs[0].Content)
	}
	for d := range cgroupDirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("build cgroup %s still there after the agent stopped (%v)", d, err)
		}
	}
	if pkgs := st.Server.Packages("e2e", arch); len(pkgs) != 1 || pkgs[0].Info.Name != "e2e-limits" {
		t.Errorf("published %v, want e2e-limits", pkgs)
	}
}
