package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// BenchmarkSlotUtilisation runs `vagent run` with two slots on a queue of
// short real builds and samples the agent's /status every 20 ms. It reports
// how long a slot stays free after a build ends while the server still has
// jobs (the target: slots never idle while the server has jobs, so this gap
// is a poll round trip, not a polling_frequency, which is set to 30 s
// here), and the slots' utilisation while jobs are queued.
func BenchmarkSlotUtilisation(b *testing.B) {
	if !sandbox.SeccompSupported {
		testkit.Unavailable(b, "vagent run needs a binary built with -tags seccomp (make test builds it so)")
	}
	testkit.RequireRoot(b)
	testkit.RequireTool(b, testkit.RegistryBinary, "docker-registry")
	bin := agentBinary(b)
	dir, err := os.MkdirTemp("", "vagent-bench-slots-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	st, err := testkit.StartStack(ctx, filepath.Join(dir, "stack"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const arch, jobs, slots = "x86_64", 8, 2
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "agent.yaml")
	yaml := st.AgentYAML(filepath.Join(dir, "data"), arch, slots, 30*time.Second) + "metrics_address: " + metricsAddr + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	// Warm up: the builder image is prepared by the first build, outside
	// the measurement.
	if _, err := st.AddURLTarget("warmup", "bench", arch, testkit.DemoPKGBUILD("bench-warmup", "1")); err != nil {
		b.Fatal(err)
	}
	var out sandboxtest.Buffer
	cmd := exec.Command(bin, "run", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	if _, err := st.WaitLogs(ctx, 1); err != nil {
		b.Fatalf("%v\n%s", err, out.String())
	}
	b.ResetTimer()
	for i := range jobs {
		if _, err := st.AddURLTarget(fmt.Sprintf("p%d", i), "bench", arch, testkit.DemoPKGBUILD(fmt.Sprintf("bench-p%d", i), "1")); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	type sample struct {
		at      time.Time
		queued  int
		running []bool
	}
	var samples []sample
	for len(st.Server.Logs()) < 1+jobs {
		if ctx.Err() != nil {
			b.Fatalf("timed out\n%s", out.String())
		}
		var s poll.Status
		resp, err := http.Get("http://" + metricsAddr + "/status")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&s)
			resp.Body.Close()
		}
		if err == nil && len(s.Slots) == slots {
			sm := sample{at: time.Now(), queued: len(st.Server.Queued(arch))}
			for _, sl := range s.Slots {
				sm.running = append(sm.running, sl.State == "running")
			}
			samples = append(samples, sm)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	total := time.Since(start)
	// Gaps: from a slot leaving "running" while jobs are queued to it (or
	// the other slot) running again; utilisation over the samples taken
	// while jobs were queued.
	var gaps []time.Duration
	busy, possible := 0, 0
	freeSince := make([]time.Time, slots)
	for i, sm := range samples {
		for s := range slots {
			if i > 0 && samples[i-1].running[s] && !sm.running[s] && sm.queued > 0 {
				freeSince[s] = sm.at
			}
			if sm.running[s] && !freeSince[s].IsZero() {
				gaps = append(gaps, sm.at.Sub(freeSince[s]))
				freeSince[s] = time.Time{}
			}
		}
		if sm.queued > 0 {
			for s := range slots {
				possible++
				if sm.running[s] {
					busy++
				}
			}
		}
	}
	slices.Sort(gaps)
	if len(gaps) > 0 {
		b.ReportMetric(float64(gaps[len(gaps)/2].Milliseconds()), "median-free-gap-ms")
		b.ReportMetric(float64(gaps[len(gaps)-1].Milliseconds()), "max-free-gap-ms")
	}
	if possible > 0 {
		b.ReportMetric(100*float64(busy)/float64(possible), "busy-while-queued-%")
	}
	b.ReportMetric(total.Seconds(), "wall-s")
	b.Logf("%d jobs on %d slots in %s; %d samples; gaps %v", jobs, slots, total.Round(time.Millisecond), len(samples), gaps)
	for _, l := range st.Server.Logs() {
		if l.ExitCode != 0 {
			b.Errorf("target %d: exit code %d\n%s", l.TargetID, l.ExitCode, l.Content)
		}
	}
}
