package sandbox_test

import (
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// benchRounds is VAGENT_BENCH_ROUNDS, or def.
func benchRounds(def int) int {
	if n, err := strconv.Atoi(os.Getenv("VAGENT_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return def
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkNetworkStart measures a run of /bin/true, from Run to its
// return (set-up and teardown included), with each network mode,
// interleaved, medians of VAGENT_BENCH_ROUNDS rounds (default 30). It
// reports the milliseconds of each, what the isolated network adds to the
// host network's (goal: ≤ 100 ms) and their ratio.
func BenchmarkNetworkStart(b *testing.B) {
	e := newManager(b)
	rootfs := sandboxtest.BusyboxRootfs(b)
	fwd := startHostHTTP(b, "127.0.0.1:0", "ok")
	modes := []struct {
		name string
		spec sandbox.Spec
	}{
		{"host", sandbox.Spec{Network: sandbox.NetworkHost}},
		{"none", sandbox.Spec{Network: sandbox.NetworkNone}},
		{"isolated", sandbox.Spec{Network: sandbox.NetworkIsolated, Forward: []string{fwd.addr}}},
	}
	samples := map[string][]time.Duration{}
	rounds := benchRounds(30)
	b.ResetTimer()
	for range b.N {
		for range rounds {
			for _, m := range modes {
				spec := m.spec
				spec.Lower, spec.Args, spec.Env = rootfs, []string{"/bin/true"}, pathEnv
				start := time.Now()
				res, err := e.m.Run(b.Context(), spec)
				if err != nil || res.ExitCode != 0 {
					b.Fatalf("%s: %v %+v", m.name, err, res)
				}
				samples[m.name] = append(samples[m.name], time.Since(start))
			}
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for _, m := range modes {
		b.ReportMetric(ms(median(samples[m.name])), m.name+"-ms")
	}
	host, iso := median(samples["host"]), median(samples["isolated"])
	b.ReportMetric(ms(iso-host), "isolated-added-ms")
	b.ReportMetric(float64(iso)/float64(host), "isolated/host")
	b.Logf("median of %d runs: host %s, none %s, isolated %s: the isolated network adds %s (goal ≤ 100ms)",
		len(samples["host"]), host.Round(time.Millisecond), median(samples["none"]).Round(time.Millisecond), iso.Round(time.Millisecond), (iso - host).Round(time.Millisecond))
}

// BenchmarkNetworkDownload downloads 200 MiB from an HTTP server on the
// host's loopback into a run (busybox wget to /dev/null): on the host
// network directly, on the isolated network through the agent's forward.
// The server times each response, from the request to its last byte
// taken by the connection; medians of VAGENT_BENCH_ROUNDS rounds (default
// 5). It reports MiB/s of each and the ratio isolated/host (goal ≥ 0.5).
func BenchmarkNetworkDownload(b *testing.B) {
	e := newManager(b)
	rootfs := sandboxtest.BusyboxRootfs(b)
	const size = 200 << 20
	chunk := make([]byte, 1<<20)
	var mu sync.Mutex
	var took time.Duration
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		w.(http.Flusher).Flush()
		mu.Lock()
		took = time.Since(start)
		mu.Unlock()
	})}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	b.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String() + "/200M"
	modes := []struct {
		name string
		spec sandbox.Spec
	}{
		{"host", sandbox.Spec{Network: sandbox.NetworkHost}},
		{"isolated", sandbox.Spec{Network: sandbox.NetworkIsolated, Forward: []string{ln.Addr().String()}}},
	}
	samples := map[string][]time.Duration{}
	rounds := benchRounds(5)
	b.ResetTimer()
	for range b.N {
		for range rounds {
			for _, m := range modes {
				var out sandboxtest.Buffer
				spec := m.spec
				spec.Lower, spec.Env, spec.Output = rootfs, pathEnv, &out
				spec.Args = []string{"wget", "-q", "-O", "/dev/null", url}
				res, err := e.m.Run(b.Context(), spec)
				if err != nil || res.ExitCode != 0 {
					b.Fatalf("%s: %v %+v %s", m.name, err, res, out.String())
				}
				mu.Lock()
				samples[m.name] = append(samples[m.name], took)
				mu.Unlock()
			}
		}
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	host, iso := rate(median(samples["host"])), rate(median(samples["isolated"]))
	b.ReportMetric(host, "host-MiB/s")
	b.ReportMetric(iso, "isolated-MiB/s")
	b.ReportMetric(iso/host, "isolated/host")
	b.Logf("200 MiB from the host's loopback, median of %d: host network %.0f MiB/s, isolated network (forward) %.0f MiB/s: %.2f× (goal ≥ 0.5×)",
		len(samples["host"]), host, iso, iso/host)
}
