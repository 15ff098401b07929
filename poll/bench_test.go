package poll

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkScheduling pushes 1,000 instant jobs through 4 slots against the
// in-process test server and reports the cost per job, and the same
// requests made back to back by a bare client (one poll and one upload per
// job) as the peer: x-bare is the agent's cost as a multiple of it.
func BenchmarkScheduling(b *testing.B) {
	b.Run("fsync", func(b *testing.B) { benchScheduling(b, true) })
	b.Run("nofsync", func(b *testing.B) { benchScheduling(b, false) })
}

func benchScheduling(b *testing.B, fsync bool) {
	const jobs = 1000
	var agentTotal, bareTotal time.Duration
	runs := 0
	for b.Loop() {
		b.StopTimer()
		h := newHarness(b)
		h.addJobs(b, jobs, false)
		h.log.SetOutput(io.Discard)
		a := h.agent(b, instant, WithSlots(4), WithPollInterval(time.Hour), WithFsync(fsync))
		b.StartTimer()
		t0 := time.Now()
		stop := start(b, a)
		for h.srv.Statuses("logs.upload")[200] < jobs {
			time.Sleep(200 * time.Microsecond)
		}
		agentTotal += time.Since(t0)
		b.StopTimer()
		_ = stop()

		h2 := newHarness(b)
		h2.addJobs(b, jobs, false)
		p := filepath.Join(h2.dir, "bare.log")
		t1 := time.Now()
		for range jobs {
			js, err := h2.client.Poll(context.Background(), testArch, 1)
			if err != nil || len(js) != 1 {
				b.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("building target "+strconv.Itoa(js[0].TargetID)+"\n"), 0o600); err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			fi, _ := f.Stat()
			_, err = h2.client.UploadLog(context.Background(), LogParams{TargetID: js[0].TargetID, Start: t1, End: t1, Arch: testArch}, io.NewSectionReader(f, 0, fi.Size()))
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
		bareTotal += time.Since(t1)
		runs++
		b.StartTimer()
	}
	perJob := float64(agentTotal.Nanoseconds()) / float64(runs*jobs)
	bare := float64(bareTotal.Nanoseconds()) / float64(runs*jobs)
	b.ReportMetric(perJob, "ns/job")
	b.ReportMetric(bare, "bare-ns/job")
	b.ReportMetric(perJob/bare, "x-bare")
}

// BenchmarkIdle runs an agent process with nothing to do and reports its
// resident memory and CPU use. VAGENT_BENCH_IDLE sets the measured period
// (default 10s; `make bench` uses 60s); the agent polls every 30s, the
// reference agent's default.
func BenchmarkIdle(b *testing.B) {
	period := 10 * time.Second
	if v := os.Getenv("VAGENT_BENCH_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("VAGENT_BENCH_IDLE: %v", err)
		}
		period = d
	}
	for b.Loop() {
		b.StopTimer()
		h := newHarness(b)
		child := startChild(b, "instant", h.ts.URL, h.dir, 30*time.Second)
		pid := child.Process.Pid
		time.Sleep(time.Second) // start-up and the first poll
		cpu0, err := cpuTicks(pid)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		time.Sleep(period)
		cpu1, err := cpuTicks(pid)
		if err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(t0)
		rss, err := rssKiB(pid)
		if err != nil {
			b.Fatal(err)
		}
		_ = child.Process.Kill()
		_ = child.Wait()
		// Linux reports CPU time in clock ticks of 1/100 s.
		cpuPct := float64(cpu1-cpu0) / 100 / elapsed.Seconds() * 100
		b.ReportMetric(float64(rss)/1024, "RSS-MiB")
		b.ReportMetric(cpuPct, "CPU-%")
		b.ReportMetric(float64(h.srv.Requests("jobs.poll")), "polls")
		b.StartTimer()
	}
}

func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is 0; utime and stime are 11 and 12.
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, err1
	}
	return u + st, nil
}

func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, os.ErrNotExist
}
