package poll

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/vieter"
)

// BenchmarkScheduling pushes 1,000 instant jobs through 4 slots against the
// in-process test server and reports the cost per job, and the same
// requests made back to back by a bare client (one poll and one upload from
// memory per job: the network part) as the peer: overhead is the agent's
// cost beyond it, x-bare its multiple. With fsync a second peer keeps each
// log durable too (see bareRun).
func BenchmarkScheduling(b *testing.B) {
	b.Run("fsync", func(b *testing.B) { benchScheduling(b, true) })
	b.Run("nofsync", func(b *testing.B) { benchScheduling(b, false) })
}

func benchScheduling(b *testing.B, fsync bool) {
	const jobs = 1000
	var agentTotal, bareTotal, durableTotal time.Duration
	var agentCPU, bareCPU time.Duration
	runs := 0
	for b.Loop() {
		b.StopTimer()
		h := newHarness(b)
		h.addJobs(b, jobs, false)
		h.log.SetOutput(io.Discard)
		a := h.agent(b, instant, WithSlots(4), WithPollInterval(time.Hour), WithFsync(fsync))
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime()
		stop := start(b, a)
		for h.srv.Statuses("logs.upload")[200] < jobs {
			time.Sleep(200 * time.Microsecond)
		}
		agentTotal += time.Since(t0)
		agentCPU += cpuTime() - c0
		b.StopTimer()
		_ = stop()

		c1 := cpuTime()
		bareTotal += bareRun(b, jobs, false)
		bareCPU += cpuTime() - c1
		if fsync {
			durableTotal += bareRun(b, jobs, true)
		}
		runs++
		b.StartTimer()
	}
	perJob := float64(agentTotal.Nanoseconds()) / float64(runs*jobs)
	bare := float64(bareTotal.Nanoseconds()) / float64(runs*jobs)
	b.ReportMetric(perJob, "ns/job")
	b.ReportMetric(bare, "bare-ns/job")
	b.ReportMetric(perJob-bare, "overhead-ns/job")
	b.ReportMetric(perJob/bare, "x-bare")
	// CPU time of the process (agent or client, and the in-process server)
	// per job: steadier than wall time on a loaded machine.
	b.ReportMetric(float64(agentCPU.Microseconds())/float64(runs*jobs), "cpu-µs/job")
	b.ReportMetric(float64(bareCPU.Microseconds())/float64(runs*jobs), "bare-cpu-µs/job")
	if fsync {
		durable := float64(durableTotal.Nanoseconds()) / float64(runs*jobs)
		b.ReportMetric(durable, "durable-bare-ns/job")
		b.ReportMetric(perJob/durable, "x-durable-bare")
	}
}

// bareRun is the peer: jobs polled and their logs uploaded back to back by
// one client. Without durable the log is uploaded from memory: the
// network part alone. With durable the client first keeps each log as
// durably as the agent's spool does, with the fewest file operations that
// can: create the file, sync the directory, write, sync the file, and
// delete it after the upload.
func bareRun(b *testing.B, jobs int, durable bool) time.Duration {
	h := newHarness(b)
	h.addJobs(b, jobs, false)
	t := time.Now()
	for i := range jobs {
		js, err := h.client.Poll(context.Background(), testArch, 1)
		if err != nil || len(js) != 1 {
			b.Fatal(err)
		}
		if err := bareJob(h, i, js[0], t, durable); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(t)
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

// bareJob uploads the log of job j, from memory or from a durable file.
func bareJob(h *harness, i int, j Job, t time.Time, durable bool) error {
	content := "building target " + strconv.Itoa(j.TargetID) + "\n"
	p := vieter.LogParams{TargetID: j.TargetID, Start: t, End: t, Arch: testArch}
	if !durable {
		_, err := h.client.UploadLog(context.Background(), p, io.NewSectionReader(strings.NewReader(content), 0, int64(len(content))))
		return err
	}
	path := filepath.Join(h.dir, "bare-"+strconv.Itoa(i)+".log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syncDir(h.dir); err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if _, err := h.client.UploadLog(context.Background(), p, io.NewSectionReader(f, 0, int64(len(content)))); err != nil {
		return err
	}
	return os.Remove(path)
}

// cpuTime is the user and system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
