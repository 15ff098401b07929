package sandbox_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// hostHTTP is an HTTP server of the host that counts the requests it got:
// what the host saw of a build.
type hostHTTP struct {
	addr string // host:port as a client dials it
	port int
	hits atomic.Int32
}

// startHostHTTP serves body at every path on listen ("127.0.0.1:0",
// ":0"...) until the test ends.
func startHostHTTP(t testing.TB, listen, body string) *hostHTTP {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostHTTP{addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		_, _ = w.Write([]byte(body))
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return h
}

// wgetScript defines try NAME URL, which prints "NAME: reached: BODY" or
// "NAME: refused: ERROR".
const wgetScript = `try() { if out=$(timeout 5 wget -q -O - "$2" 2>&1); then echo "$1: reached: $out"; else echo "$1: refused: $out"; fi; }
`

// TestIsolatedNetworkReach: from an isolated run, a forwarded loopback
// service of the host answers; a loopback service that is not forwarded,
// a service on the host's own address and a link-local address are
// refused, and the host's services saw no request.
func TestIsolatedNetworkReach(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	secret := startHostHTTP(t, "127.0.0.1:0", "loopback secret")
	fwd := startHostHTTP(t, "127.0.0.1:0", "forwarded ok")
	// Forwarded by name: localhost is 127.0.0.1 and ::1, the server
	// listens on the first only, so only it is forwarded (a forward of ::1
	// would accept and then drop a client's connection instead of letting
	// it try the next address).
	byName := startHostHTTP(t, "127.0.0.1:0", "by name")
	all := startHostHTTP(t, ":0", "host interface secret")
	ha := testkit.HostAddr(t)
	script := wgetScript + fmt.Sprintf(`try forwarded http://%s/
try localhost-name http://localhost:%d/
try loopback http://%s/
try loopback-any http://127.0.0.1:%d/
try loopback-v6 http://[::1]:%d/
try host-address http://%s/
try link-local http://169.254.169.254/
try by-name http://127.0.0.1:%d/
nc -w 2 ::1 %d </dev/null >/dev/null 2>&1 && echo "by-name-v6: reached" || echo "by-name-v6: refused"
`, fwd.addr, fwd.port, secret.addr, all.port, all.port, netip.AddrPortFrom(ha, uint16(all.port)), byName.port, byName.port)
	start := time.Now()
	res, out := sh(t, e.m, rootfs, script, func(s *sandbox.Spec) { s.Forward = []string{fwd.addr, "localhost:" + strconv.Itoa(byName.port)} })
	t.Logf("run took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d", res.ExitCode)
	}
	want := map[string]string{
		"forwarded":      "reached: forwarded ok",
		"localhost-name": "reached: forwarded ok", // localhost resolves to the forwarded 127.0.0.1
		"loopback":       "refused",
		"loopback-any":   "refused",
		"loopback-v6":    "refused",
		"host-address":   "refused",
		"link-local":     "refused: wget: can't connect to remote host (169.254.169.254): Permission denied",
		"by-name":        "reached: by name",
		"by-name-v6":     "refused",
	}
	for name, w := range want {
		if !strings.Contains(out, name+": "+w) {
			t.Errorf("%s: want %q", name, w)
		}
	}
	if n := fwd.hits.Load(); n != 2 {
		t.Errorf("the forwarded service got %d requests, want 2", n)
	}
	if n := secret.hits.Load() + all.hits.Load(); n != 0 {
		t.Errorf("the host's services got %d requests from the build", n)
	}
}

// TestIsolatedNetworkListeners: a port a run listens on is reachable
// neither from the host nor from another run, the host can still bind it,
// and the run's /proc/net/tcp lists its own listener, not the host's.
func TestIsolatedNetworkListeners(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	gate := sandboxtest.Dir(t)
	if err := os.Chmod(gate, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := startHostHTTP(t, "127.0.0.1:0", "secret")
	port := testkit.FreePort(t)
	hex := func(p int) string { return fmt.Sprintf(":%04X ", p) }
	script := fmt.Sprintf(`nc -ll -p %d -e echo from-build &
until cat /proc/net/tcp /proc/net/tcp6 | grep -q '%s'; do sleep 0.02; done
echo "host listener in /proc/net/tcp: $(cat /proc/net/tcp /proc/net/tcp6 | grep -c '%s')"
echo "listeners in /proc/net/tcp: $(cat /proc/net/tcp /proc/net/tcp6 | awk '$4 == "0A"' | wc -l)"
echo listening
until [ -e /gate/go ]; do sleep 0.02; done
echo "own listener answers: $(nc 127.0.0.1 %d </dev/null)"
`, port, hex(port), hex(secret.port), port)
	w := &readyWriter{want: "listening\n", ready: make(chan struct{})}
	type result struct {
		res *sandbox.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		res, err := e.m.Run(ctx, sandbox.Spec{
			Lower: rootfs, Env: pathEnv, Output: w, Args: []string{"sh", "-c", script},
			Mounts: []sandbox.Mount{{Source: gate, Target: "/gate", ReadOnly: true}},
		})
		done <- result{res, err}
	}()
	select {
	case <-w.ready:
	case r := <-done:
		t.Fatalf("the run ended before listening: %+v %v\n%s", r.res, r.err, w.String())
	}
	// The host: nothing listens on the port, and the port is free.
	for _, addr := range []string{"127.0.0.1", "::1", testkit.HostAddr(t).String()} {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), 2*time.Second); err == nil {
			c.Close()
			t.Errorf("the host reached the run's listener at %s:%d", addr, port)
		}
	}
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		t.Errorf("the host cannot bind the port the run listens on: %v", err)
	} else {
		ln.Close()
	}
	// Another run does not reach it either.
	_, other := sh(t, e.m, rootfs, fmt.Sprintf(`nc -w 2 127.0.0.1 %d </dev/null && echo reached || echo refused`, port))
	if !strings.HasSuffix(other, "refused\n") || strings.Contains(other, "from-build") {
		t.Errorf("another run connecting to the port: %q", other)
	}
	if err := os.WriteFile(filepath.Join(gate, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.res.ExitCode != 0 {
		t.Fatalf("run: %+v %v\n%s", r.res, r.err, w.String())
	}
	out := w.String()
	for _, s := range []string{"host listener in /proc/net/tcp: 0\n", "listeners in /proc/net/tcp: 1\n", "own listener answers: from-build\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

// TestIsolatedNetworkPrivileges: any user of a run binds low ports, and
// container root cannot change the namespace's interfaces,
// routes or rules (the Manager owns it).
func TestIsolatedNetworkPrivileges(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, e.m, rootfs, `nc -l -p 80 -e true &
until cat /proc/net/tcp /proc/net/tcp6 | grep -q ':0050 '; do sleep 0.02; done; echo "bound port 80 as $(id -u)"`,
		func(s *sandbox.Spec) { s.UID, s.GID = 1000, 1000 })
	if res.ExitCode != 0 || out != "bound port 80 as 1000\n" {
		t.Errorf("as the builder user: exit %d, output %q", res.ExitCode, out)
	}
	res, out = sh(t, e.m, rootfs, `before=$(ip rule; ip -6 rule; ip route; ip -o link)
for c in "rule del pref 200" "-6 rule del pref 200" "rule add pref 1 lookup main" "route del default" "link set lo down" "link add x type dummy" "addr flush dev lo"; do
	ip $c 2>/dev/null && echo "ip $c: done" || echo "ip $c: refused"
done
[ "$before" = "$(ip rule; ip -6 rule; ip route; ip -o link)" ] && echo unchanged
ip rule | grep -c prohibit`)
	if res.ExitCode != 0 || strings.Contains(out, "done") || !strings.Contains(out, "unchanged\n") {
		t.Errorf("as container root: exit %d\n%s", res.ExitCode, out)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])); n < 4 {
		t.Errorf("%d prohibit rules, want at least 4:\n%s", n, out)
	}
}

// TestNetworkControlCut: Cut takes the network of a running run away,
// connections in progress included (the host's server sees its client
// go), and leaves its loopback; a Cut before the start gives a run without
// network.
func TestNetworkControlCut(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	gate := sandboxtest.Dir(t)
	if err := os.Chmod(gate, 0o755); err != nil {
		t.Fatal(err)
	}
	fwd := startHostHTTP(t, "127.0.0.1:0", "forwarded ok")
	// A download that streams until the client goes.
	streaming, gone := make(chan struct{}), make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		close(streaming)
		for {
			if _, err := w.Write(make([]byte, 1024)); err != nil {
				close(gone)
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				close(gone)
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	script := wgetScript + fmt.Sprintf(`try before http://%s/
wget -q -O /dev/null http://%s/stream &
nc -ll -p 9 -e echo loopback-service &
echo online
until [ -e /gate/go ]; do sleep 0.02; done
try after http://%s/
echo "interfaces: $(ip -o link | cut -d: -f2 | tr -d ' ' | tr '\n' ' ')"
echo "loopback: $(nc 127.0.0.1 9 </dev/null)"
`, fwd.addr, ln.Addr(), fwd.addr)
	ctl := sandbox.NewNetworkControl()
	w := &readyWriter{want: "online\n", ready: make(chan struct{})}
	done := make(chan error, 1)
	var res *sandbox.Result
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		var err error
		res, err = e.m.Run(ctx, sandbox.Spec{
			Lower: rootfs, Env: pathEnv, Output: w, Args: []string{"sh", "-c", script},
			Mounts:  []sandbox.Mount{{Source: gate, Target: "/gate", ReadOnly: true}},
			Forward: []string{fwd.addr, ln.Addr().String()}, NetworkControl: ctl,
		})
		done <- err
	}()
	select {
	case <-w.ready:
	case err := <-done:
		t.Fatalf("run ended early: %v\n%s", err, w.String())
	}
	<-streaming
	start := time.Now()
	if err := ctl.Cut(); err != nil {
		t.Fatalf("Cut: %v", err)
	}
	t.Logf("Cut took %s", time.Since(start).Round(time.Microsecond))
	select {
	case <-gone:
	case <-time.After(30 * time.Second):
		t.Error("the host's server still streams to the run after Cut")
	}
	if err := ctl.Cut(); err != nil || !ctl.IsCut() {
		t.Errorf("second Cut: %v, IsCut %v", err, ctl.IsCut())
	}
	if err := os.WriteFile(filepath.Join(gate, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || res.ExitCode != 0 {
		t.Fatalf("run: %+v %v\n%s", res, err, w.String())
	}
	out := w.String()
	for _, s := range []string{"before: reached: forwarded ok\n", "after: refused", "interfaces: lo \n", "loopback: loopback-service\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if n := fwd.hits.Load(); n != 1 {
		t.Errorf("the forwarded service got %d requests, want 1 (before the cut)", n)
	}
	// After the run, Cut does nothing.
	if err := ctl.Cut(); err != nil {
		t.Errorf("Cut after the run: %v", err)
	}

	// Cut before the start.
	ctl = sandbox.NewNetworkControl()
	if err := ctl.Cut(); err != nil {
		t.Fatal(err)
	}
	res, out = sh(t, e.m, rootfs, wgetScript+fmt.Sprintf("try fwd http://%s/\nip -o link | wc -l", fwd.addr),
		func(s *sandbox.Spec) { s.Forward, s.NetworkControl = []string{fwd.addr}, ctl })
	if res.ExitCode != 0 || !strings.Contains(out, "fwd: refused") || !strings.HasSuffix(out, "\n1\n") {
		t.Errorf("run cut before its start: exit %d\n%s", res.ExitCode, out)
	}
	if n := fwd.hits.Load(); n != 1 {
		t.Errorf("the forwarded service got %d requests, want still 1", n)
	}
}

// TestIsolatedDNS: a loopback name server of the host (as systemd-resolved's
// 127.0.0.53) answers a run's queries over UDP and TCP through the agent's
// forward, and the run sees the host's resolv.conf.
func TestIsolatedDNS(t *testing.T) {
	needRoot(t)
	// A loopback address of its own, so that port 53 is free.
	ns := netip.AddrFrom4([4]byte{127, 53, byte(os.Getpid() >> 8), byte(os.Getpid())})
	var queries atomic.Int32
	stop := serveDNS(t, ns, netip.MustParseAddr("192.0.2.123"), &queries)
	defer stop()
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("# test\nnameserver "+ns.String()+"\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newManager(t, sandbox.WithResolvConf(resolv))
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, e.m, rootfs, `cat /etc/resolv.conf; nslookup build.example 2>&1 | grep -A1 '^Name'; nslookup -type=a build.example `+ns.String()+` 2>&1 | grep Address | tail -1`)
	t.Log(out)
	if res.ExitCode != 0 || !strings.Contains(out, "nameserver "+ns.String()) || !strings.Contains(out, "192.0.2.123") {
		t.Errorf("exit %d:\n%s", res.ExitCode, out)
	}
	if queries.Load() == 0 {
		t.Error("the host's name server saw no query")
	}
}

// serveDNS answers every A query on ns:53 (UDP and TCP) with addr.
func serveDNS(t *testing.T, ns, addr netip.Addr, queries *atomic.Int32) (stop func()) {
	t.Helper()
	answer := func(q []byte) []byte {
		if len(q) < 12 {
			return nil
		}
		queries.Add(1)
		// Header: same id, response, recursion available, one answer.
		r := append([]byte{}, q[:2]...)
		r = append(r, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0)
		// The question, up to its end (name, type, class).
		end := 12
		for end < len(q) && q[end] != 0 {
			end += int(q[end]) + 1
		}
		end += 5
		if end > len(q) {
			return nil
		}
		r = append(r, q[12:end]...)
		a := addr.As4()
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, a[0], a[1], a[2], a[3])
		return r
	}
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ns, 53)))
	if err != nil {
		t.Skipf("cannot serve DNS on %s: %v", ns, err)
	}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := uc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if r := answer(buf[:n]); r != nil {
				_, _ = uc.WriteToUDPAddrPort(r, from)
			}
		}
	}()
	tl, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ns, 53)))
	if err != nil {
		uc.Close()
		t.Skipf("cannot serve DNS on %s: %v", ns, err)
	}
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var l [2]byte
				if _, err := c.Read(l[:]); err != nil {
					return
				}
				q := make([]byte, int(l[0])<<8|int(l[1]))
				if _, err := c.Read(q); err != nil {
					return
				}
				if r := answer(q); r != nil {
					_, _ = c.Write(append([]byte{byte(len(r) >> 8), byte(len(r))}, r...))
				}
			}()
		}
	}()
	return func() { uc.Close(); tl.Close() }
}

// TestNetworkDeny: WithNetworkDeny refuses a destination (here the
// host's gateway) that is otherwise reached, and a forward of an endpoint
// there is reached all the same.
func TestNetworkDeny(t *testing.T) {
	needRoot(t)
	gw := defaultGateway(t)
	probe := func(e *testEnv, fwd ...string) string {
		t.Helper()
		_, out := sh(t, e.m, sandboxtest.BusyboxRootfs(t), fmt.Sprintf(`nc -w 3 %s 80 </dev/null 2>&1; echo "exit $?"`, gw),
			func(s *sandbox.Spec) { s.Forward = fwd })
		return out
	}
	open := probe(newManager(t))
	denied := probe(newManager(t, sandbox.WithNetworkDeny(netip.PrefixFrom(gw, gw.BitLen()))))
	allowed := probe(newManager(t, sandbox.WithNetworkDeny(netip.PrefixFrom(gw, gw.BitLen()))), netip.AddrPortFrom(gw, 80).String())
	t.Logf("gateway %s: open %q, denied %q, denied but forwarded %q", gw, open, denied, allowed)
	if strings.Contains(open, "Permission denied") || !strings.Contains(denied, "Permission denied") || strings.Contains(allowed, "Permission denied") {
		t.Errorf("want the refusal only when denied and not forwarded")
	}
}

// defaultGateway returns the host's IPv4 default gateway.
func defaultGateway(t testing.TB) netip.Addr {
	t.Helper()
	data, err := os.ReadFile("/proc/net/route")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == "00000000" {
			v, err := strconv.ParseUint(f[2], 16, 32)
			if err == nil && v != 0 {
				return netip.AddrFrom4([4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)})
			}
		}
	}
	t.Skip("the host has no IPv4 default gateway")
	return netip.Addr{}
}

func TestParseForward(t *testing.T) {
	for _, tc := range []struct {
		in, host string
		port     uint16
		bad      bool
	}{
		{in: "127.0.0.1:8000", host: "127.0.0.1", port: 8000},
		{in: "[::1]:443", host: "::1", port: 443},
		{in: "localhost:22", host: "localhost", port: 22},
		{in: "git.example.org:9418", host: "git.example.org", port: 9418},
		{in: "127.0.0.1", bad: true},
		{in: "127.0.0.1:0", bad: true},
		{in: "127.0.0.1:65536", bad: true},
		{in: ":80", bad: true},
		{in: "0.0.0.0:80", bad: true},
		{in: "[fe80::1%eth0]:80", bad: true},
		{in: "a b:80", bad: true},
		{in: "-x:80", bad: true},
	} {
		host, port, err := sandbox.ParseForward(tc.in)
		if (err != nil) != tc.bad || (!tc.bad && (host != tc.host || port != tc.port)) {
			t.Errorf("ParseForward(%q) = %q, %d, %v", tc.in, host, port, err)
		}
	}
}

// mountsOfNetns counts the mounts of the network namespace with inode ino
// (nsfs mounts show "net:[ino]" as their root).
func mountsOfNetns(t testing.TB, ino uint64) int {
	t.Helper()
	data, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), fmt.Sprintf("net:[%d]", ino))
}

func TestURLEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8000":                  "127.0.0.1:8000",
		"http://localhost:8000/$repo/$arch":      "localhost:8000",
		"https://mirror.example.org/arch/$repo":  "mirror.example.org:443",
		"http://[::1]/x":                         "[::1]:80",
		"git://git.example.org/pkg.git":          "git.example.org:9418",
		"ssh://git@git.example.org:2222/pkg.git": "git.example.org:2222",
		"file:///srv/repo":                       "",
		"/srv/repo":                              "",
		"gopher://example.org/":                  "",
		"http://user:pw@127.0.0.1:99999/":        "",
	} {
		got, ok := sandbox.URLEndpoint(in)
		if got != want || ok != (want != "") {
			t.Errorf("URLEndpoint(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestForwardsFor(t *testing.T) {
	got := sandbox.ForwardsFor([]string{"127.0.0.1:9418", "127.0.0.1:9418"},
		"http://127.0.0.1:8000/$repo/$arch", "file:///srv/repo", "http://127.0.0.1:8000/other", "https://mirror.example.org/arch/$repo/os/$arch")
	want := []string{"127.0.0.1:9418", "127.0.0.1:8000", "mirror.example.org:443"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("ForwardsFor = %q, want %q", got, want)
	}
	if err := sandbox.ValidateNetwork(sandbox.NetworkIsolated, []string{"127.0.0.1"}); err == nil {
		t.Error("ValidateNetwork accepted a forward without a port")
	}
	if err := sandbox.ValidateNetwork(sandbox.NetworkMode(7), nil); err == nil {
		t.Error("ValidateNetwork accepted an unknown mode")
	}
}
