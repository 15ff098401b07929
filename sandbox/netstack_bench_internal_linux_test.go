package sandbox

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The design comparison behind the isolated network (docs/security.md,
// "Network"): which user-mode stack gives a run its egress, and which
// mechanism forwards a service of the host's loopback into it. It does not
// use a Manager: it measures the mechanisms alone.

// benchSize is the download of the throughput measurements.
const benchSize = 200 << 20

// serveBytes serves benchSize bytes on ln until the benchmark ends.
func serveBytes(b *testing.B, ln net.Listener) {
	chunk := make([]byte, 1<<20)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(benchSize))
		for n := 0; n < benchSize; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	b.Cleanup(func() { srv.Close() })
}

// download fetches benchSize bytes from addr over a connection made in the
// network namespace at ns ("" for the caller's) and returns the time it
// took.
func download(ns, addr string) (time.Duration, error) {
	start := time.Now()
	var c net.Conn
	dial := func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 10*time.Second)
		return err
	}
	var err error
	if ns == "" {
		err = dial()
	} else {
		err = inNetns(ns, dial)
	}
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /bytes HTTP/1.0\r\n\r\n"); err != nil {
		return 0, err
	}
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return 0, err
	}
	if n < benchSize {
		return 0, fmt.Errorf("got %d bytes", n)
	}
	return time.Since(start), nil
}

// fakeHost makes a network namespace that stands for a host with a default
// route (through a tap device without a reader) and a server address of
// its own (on its loopback), so that egress is measured without touching
// the real host's network. It returns the namespace and the server's
// listener.
func fakeHost(b *testing.B, dir string) (string, net.Listener) {
	ns := filepath.Join(dir, "fakehost")
	var ln net.Listener
	err := createNetns(ns, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(lo); err != nil {
			return err
		}
		tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, Mode: netlink.TUNTAP_MODE_TAP}
		if err := h.LinkAdd(tap); err != nil {
			return fmt.Errorf("tap: %w", err)
		}
		link, err := h.LinkByName("uplink")
		if err != nil {
			return err
		}
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(netip.MustParsePrefix("10.77.0.1/24"))}); err != nil {
			return err
		}
		if err := h.LinkSetUp(link); err != nil {
			return err
		}
		gw := netip.MustParseAddr("10.77.0.254").AsSlice()
		if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw, Flags: int(netlink.FLAG_ONLINK)}); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
		if err := h.AddrAdd(lo, &netlink.Addr{IPNet: prefixNet(netip.MustParsePrefix("10.77.1.1/32"))}); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", "10.77.1.1:8080")
		return err
	})
	if err != nil {
		b.Fatalf("fake host: %v", err)
	}
	b.Cleanup(func() { _ = unix.Unmount(ns, unix.MNT_DETACH) })
	return ns, ln
}

// startIn starts cmd with a thread in the network namespace ns, and waits
// until it writes a line to descriptor 3.
func startIn(ns string, cmd *exec.Cmd) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd.ExtraFiles = []*os.File{pw}
	err = inNetns(ns, cmd.Start)
	pw.Close()
	if err != nil {
		return err
	}
	ready := make(chan error, 1)
	go func() {
		_, err := bufio.NewReader(pr).ReadString('\n')
		if err == io.EOF {
			err = nil // slirp4netns writes "1" without a line break, then closes
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(15 * time.Second):
		return fmt.Errorf("%s not ready", cmd.Path)
	}
}

// stack is a user-mode network stack attached to a run's namespace.
type stack struct {
	name string
	cmd  func(ns string) *exec.Cmd
}

// BenchmarkNetworkStacks compares pasta and slirp4netns as the isolated
// network's egress, in a fake host namespace: the time from a new
// namespace to its configured interface (median of
// VAGENT_BENCH_ROUNDS, default 20) and a 200 MiB download from a server
// of that host (median of 5), against the host's own download. Then the
// two ways of forwarding a service on the real host's loopback into a
// run: the agent's forward (a socket in the namespace, splice to the
// host's) and pasta's -T (--tcp-ns), 200 MiB each, against the host's own.
func BenchmarkNetworkStacks(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	pasta, err := exec.LookPath("pasta")
	if err != nil {
		b.Skip("needs pasta (Debian package passt)")
	}
	stacks := []stack{{"pasta", func(ns string) *exec.Cmd {
		args := pastaArgs(ns)
		args[len(args)-1] = "/dev/fd/3"
		return exec.Command(pasta, args...)
	}}}
	if slirp, err := exec.LookPath("slirp4netns"); err == nil {
		stacks = append(stacks, stack{"slirp4netns", func(ns string) *exec.Cmd {
			return exec.Command(slirp, "--configure", "--mtu=65520", "--disable-host-loopback", "--netns-type=path", "--ready-fd=3", ns, "tap0")
		}})
	} else {
		b.Log("slirp4netns not installed (Debian package slirp4netns, make bench-deps): pasta only")
	}
	dir := b.TempDir()
	host, ln := fakeHost(b, dir)
	serveBytes(b, ln)
	n := 0
	attach := func(s stack) (string, *exec.Cmd, time.Duration) {
		n++
		ns := filepath.Join(dir, fmt.Sprintf("run%d", n))
		start := time.Now()
		if err := createNetns(ns, func() error { return nil }); err != nil {
			b.Fatal(err)
		}
		cmd := s.cmd(ns)
		if err := startIn(host, cmd); err != nil {
			b.Fatalf("%s: %v", s.name, err)
		}
		return ns, cmd, time.Since(start)
	}
	detach := func(ns string, cmd *exec.Cmd) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = unix.Unmount(ns, unix.MNT_DETACH)
	}
	starts := map[string][]time.Duration{}
	downloads := map[string][]time.Duration{}
	rounds := 20
	if v, err := strconv.Atoi(os.Getenv("VAGENT_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	for range b.N {
		for range rounds {
			for _, s := range stacks {
				ns, cmd, took := attach(s)
				starts[s.name] = append(starts[s.name], took)
				detach(ns, cmd)
			}
		}
		for range 5 {
			d, err := download(host, "10.77.1.1:8080")
			if err != nil {
				b.Fatalf("host: %v", err)
			}
			downloads["host"] = append(downloads["host"], d)
			for _, s := range stacks {
				ns, cmd, _ := attach(s)
				d, err := download(ns, "10.77.1.1:8080")
				detach(ns, cmd)
				if err != nil {
					b.Fatalf("%s: %v", s.name, err)
				}
				downloads[s.name] = append(downloads[s.name], d)
			}
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	rate := func(d []time.Duration) float64 { return float64(benchSize) / (1 << 20) / medianDuration(d).Seconds() }
	var lines []string
	for _, s := range stacks {
		b.ReportMetric(ms(medianDuration(starts[s.name])), s.name+"-start-ms")
		b.ReportMetric(rate(downloads[s.name]), s.name+"-MiB/s")
		lines = append(lines, fmt.Sprintf("%s: ready in %s, %.0f MiB/s (%.2f× the host's)", s.name,
			medianDuration(starts[s.name]).Round(time.Millisecond), rate(downloads[s.name]), rate(downloads[s.name])/rate(downloads["host"])))
	}
	b.ReportMetric(rate(downloads["host"]), "host-MiB/s")
	if len(stacks) == 2 {
		b.ReportMetric(rate(downloads["pasta"])/rate(downloads["slirp4netns"]), "pasta/slirp4netns")
	}
	b.Logf("egress, 200 MiB from a server of the (fake) host: host %.0f MiB/s; %s", rate(downloads["host"]), strings.Join(lines, "; "))

	// Forwards of a service on the real host's loopback.
	lb, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	serveBytes(b, lb)
	target := netip.MustParseAddrPort(lb.Addr().String())
	fwd := map[string][]time.Duration{}
	for range b.N {
		for range 5 {
			d, err := download("", target.String())
			if err != nil {
				b.Fatal(err)
			}
			fwd["host"] = append(fwd["host"], d)

			n++
			ns := filepath.Join(dir, fmt.Sprintf("run%d", n))
			var lst *nsListeners
			if err := createNetns(ns, func() error {
				var err error
				lst, err = configureNetns(&netPlan{proxied: []proxyTarget{{addr: target}}})
				return err
			}); err != nil {
				b.Fatal(err)
			}
			f := startForwarder(lst, silentLogger())
			d, err = download(ns, target.String())
			f.close()
			_ = unix.Unmount(ns, unix.MNT_DETACH)
			if err != nil {
				b.Fatalf("agent forward: %v", err)
			}
			fwd["agent forward"] = append(fwd["agent forward"], d)

			n++
			ns = filepath.Join(dir, fmt.Sprintf("run%d", n))
			if err := createNetns(ns, func() error { return nil }); err != nil {
				b.Fatal(err)
			}
			args := pastaArgs(ns)
			i := slices.Index(args, "--tcp-ns")
			args[i+1] = strconv.Itoa(int(target.Port()))
			args[len(args)-1] = "/dev/fd/3"
			cmd := exec.Command(pasta, args...)
			if err := startIn("/proc/self/ns/net", cmd); err != nil {
				b.Fatalf("pasta -T: %v", err)
			}
			d, err = download(ns, target.String())
			detach(ns, cmd)
			if err != nil {
				b.Fatalf("pasta -T: %v", err)
			}
			fwd["pasta -T"] = append(fwd["pasta -T"], d)
		}
	}
	hostRate := rate(fwd["host"])
	b.ReportMetric(hostRate, "loopback-host-MiB/s")
	b.ReportMetric(rate(fwd["agent forward"]), "agent-forward-MiB/s")
	b.ReportMetric(rate(fwd["pasta -T"]), "pasta-T-MiB/s")
	b.Logf("forwards, 200 MiB from the host's loopback: host %.0f MiB/s; agent forward %.0f MiB/s (%.2f×); pasta -T %.0f MiB/s (%.2f×)",
		hostRate, rate(fwd["agent forward"]), rate(fwd["agent forward"])/hostRate, rate(fwd["pasta -T"]), rate(fwd["pasta -T"])/hostRate)
}

func medianDuration(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
