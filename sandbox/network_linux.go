package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The files of an isolated run's network in its run directory (its
// namespace is bind-mounted on <data>/netns/<id>: pasta drops
// CAP_DAC_OVERRIDE before it opens it, so it must not be below runs/,
// which belongs to the mapped root).
const (
	pastaPidFile = "pasta.pid"   // pasta's pid, for recovery after a crash
	resolvFile   = "resolv.conf" // the run's /etc/resolv.conf
)

// maxResolvConf bounds the host's resolv.conf that is read.
const maxResolvConf = 64 << 10

// netPlan is what an isolated run's network needs, worked out in the host's
// network namespace before the run's is made.
type netPlan struct {
	proxied []proxyTarget  // endpoints of the host the agent forwards
	allowed []proxyTarget  // remote endpoints allowed past the refusals
	refused []netip.Prefix // destinations refused (prohibit rules)
	local   []netip.Addr   // addresses added to the run's loopback for proxies
	resolv  []byte         // the run's /etc/resolv.conf
}

// proxyTarget is an endpoint, TCP or UDP. For an endpoint of the host, the
// agent listens at addr in the run's namespace and connects to addr on the
// host; any other is allowed past the refusals.
type proxyTarget struct {
	addr netip.AddrPort
	udp  bool
}

// hostAddrs returns the host's own addresses. It must run on a thread in the
// host's network namespace (any goroutine that is not locked to a thread of
// a run's namespace).
func hostAddrs() (map[netip.Addr]bool, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing the host's addresses: %w", err)
	}
	m := map[netip.Addr]bool{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			m[ip.Unmap()] = true
		}
	}
	return m, nil
}

// planNetwork works out the network of an isolated run of spec.
func (m *Manager) planNetwork(ctx context.Context, spec *Spec) (*netPlan, error) {
	own, err := hostAddrs()
	if err != nil {
		return nil, err
	}
	p := &netPlan{}
	seen := map[proxyTarget]bool{}
	// reach makes the run reach t: through a forward of the agent when it
	// is the host's, past the refusals otherwise.
	reach := func(t proxyTarget) {
		if seen[t] {
			return
		}
		seen[t] = true
		a := t.addr.Addr()
		if !a.IsLoopback() && !own[a] {
			p.allowed = append(p.allowed, t)
			return
		}
		p.proxied = append(p.proxied, t)
		if !a.IsLoopback() && !slices.Contains(p.local, a) {
			p.local = append(p.local, a)
		}
	}
	for _, f := range spec.Forward {
		host, port, err := ParseForward(f)
		if err != nil {
			return nil, err
		}
		ips, err := resolveForward(ctx, host)
		if err != nil {
			m.opts.log.WithError(err).WithField("forward", f).Warn("forward not set up: cannot resolve its host")
			continue
		}
		targets := make([]netip.AddrPort, len(ips))
		for i, ip := range ips {
			targets[i] = netip.AddrPortFrom(ip, port)
		}
		for _, ap := range listening(targets, own) {
			reach(proxyTarget{addr: ap})
		}
	}
	// DNS: the name servers of the run's resolv.conf, over UDP and TCP.
	resolv, servers := readResolvConf(m.opts.resolvConf)
	p.resolv = resolv
	for _, ns := range servers {
		for _, udp := range []bool{true, false} {
			reach(proxyTarget{addr: netip.AddrPortFrom(ns, 53), udp: udp})
		}
	}
	p.refused = append(p.refused, refusedPrefixes...)
	p.refused = append(p.refused, m.opts.netDeny...)
	for a := range own {
		if !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			p.refused = append(p.refused, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	slices.SortFunc(p.refused, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	p.refused = slices.Compact(p.refused)
	return p, nil
}

// listening returns, of the addresses a forward's name resolved to, those
// of the host where something listens, when there are several and some of
// them are the host's. A client of the name (curl, git) falls back to the
// next address when one refuses it, but a forward accepts first and can
// only close the connection when the host's endpoint refuses it: "localhost"
// (127.0.0.1 and ::1) for a server that listens on 127.0.0.1 alone would
// fail through a forward of ::1. When none listens now, all are kept.
func listening(targets []netip.AddrPort, own map[netip.Addr]bool) []netip.AddrPort {
	if len(targets) < 2 {
		return targets
	}
	var up []netip.AddrPort
	for _, t := range targets {
		a := t.Addr()
		if !a.IsLoopback() && !own[a] {
			up = append(up, t) // reached through the network, not forwarded
			continue
		}
		if c, err := net.DialTimeout("tcp", t.String(), time.Second); err == nil {
			c.Close()
			up = append(up, t)
		}
	}
	if len(up) == 0 {
		return targets
	}
	return up
}

// resolveForward returns the addresses of a forward's host.
func resolveForward(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

// readResolvConf returns the host's resolver configuration, as a run
// gets it, and its name servers: the C library's default, 127.0.0.1, when
// it names none.
func readResolvConf(path string) ([]byte, []netip.Addr) {
	var data []byte
	if f, err := os.Open(path); err == nil {
		data, _ = io.ReadAll(io.LimitReader(f, maxResolvConf))
		f.Close()
	}
	var servers []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Zone() == "" {
				servers = append(servers, a.Unmap())
			}
		}
	}
	if len(servers) == 0 {
		servers = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	return data, servers
}

// runNet is the network of one isolated run: its namespace, pasta and the
// agent's forwards.
type runNet struct {
	m      *Manager
	log    logrus.FieldLogger
	dirs   runDirs
	nsPath string
	ctl    *NetworkControl

	mu      sync.Mutex
	mounted bool
	pasta   *pasta
	fwd     *forwarder
	lst     *nsListeners
	cut     bool
}

// setupNetwork makes the network of an isolated run with directories d.
// On error what it made is removed.
func (m *Manager) setupNetwork(ctx context.Context, spec *Spec, d runDirs, log logrus.FieldLogger) (_ *runNet, retErr error) {
	plan, err := m.planNetwork(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(d.base, resolvFile), plan.resolv, 0o644); err != nil {
		return nil, err
	}
	n := &runNet{m: m, log: log, dirs: d, nsPath: d.netns, ctl: spec.NetworkControl}
	defer func() {
		if retErr != nil {
			_ = n.close()
		}
	}()
	n.mounted = true // from here on, close unmounts
	if err := createNetns(n.nsPath, func() error {
		var err error
		n.lst, err = configureNetns(plan)
		return err
	}); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctl != nil && n.ctl.attach(n.cutNetwork) {
		// Cut before the run started: it starts without a network.
		n.cut = true
		n.lst.close()
		n.lst = nil
		return n, nil
	}
	// Not waited for here: pasta configures the namespace while the
	// container is created (waitReady).
	p, err := m.startPasta(n.nsPath, filepath.Join(d.base, pastaPidFile))
	if err != nil {
		return nil, err
	}
	n.pasta = p
	n.fwd = startForwarder(n.lst, log)
	n.lst = nil
	return n, nil
}

// waitReady waits until pasta has configured the namespace (at once when
// the network was cut meanwhile).
func (n *runNet) waitReady(ctx context.Context) error {
	n.mu.Lock()
	p := n.pasta
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	err := p.waitReady(ctx)
	if err != nil {
		n.mu.Lock()
		if n.cut {
			err = nil // Cut killed it
		}
		n.mu.Unlock()
	}
	return err
}

// cutNetwork takes the run's network away (NetworkControl.Cut).
func (n *runNet) cutNetwork() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cut {
		return nil
	}
	n.cut = true
	if n.fwd != nil {
		n.fwd.close()
		n.fwd = nil
	}
	if n.pasta != nil {
		if err := n.pasta.stop(); err != nil {
			return err
		}
		n.pasta = nil
	}
	// The interface goes with pasta's file descriptor: check that only the
	// loopback interface is left.
	var links []string
	if err := inNetns(n.nsPath, func() error {
		var err error
		links, err = nsLinks()
		return err
	}); err != nil {
		return err
	}
	if len(links) != 1 || links[0] != "lo" {
		return fmt.Errorf("interfaces left after pasta exited: %s", strings.Join(links, ", "))
	}
	n.log.Debug("network cut")
	return nil
}

// shutdown ends the network: the forwards close and pasta gets SIGKILL,
// but is not waited for (close does). The run's processes are gone or
// going. It may be called more than once.
func (n *runNet) shutdown() error {
	if n.ctl != nil {
		n.ctl.detach()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut = true
	if n.lst != nil {
		n.lst.close()
		n.lst = nil
	}
	if n.fwd != nil {
		n.fwd.close()
		n.fwd = nil
	}
	if n.pasta != nil {
		return n.pasta.kill()
	}
	return nil
}

// close shuts the network down and unmounts the namespace; pasta, killed,
// is reaped in the background (Manager.Close waits for it). It is called
// once, after the container is gone.
func (n *runNet) close() error {
	var errs []error
	if err := n.shutdown(); err != nil {
		errs = append(errs, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.pasta; p != nil {
		// Killed by shutdown; its exit (the interface's removal) takes
		// tens of milliseconds that the run need not wait for: the
		// Manager reaps it, and Close waits for that.
		n.m.reapers.Add(1)
		go func() {
			defer n.m.reapers.Done()
			<-p.done
		}()
		n.pasta = nil
	}
	if n.mounted {
		if err := unix.Unmount(n.nsPath, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting the network namespace: %w", err))
		}
		n.mounted = false
	}
	if err := os.Remove(n.nsPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
