package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Rule priorities in a run's network namespace: the allow rules of
// forwarded remote endpoints come before the refusals. The local table
// (priority 0) comes first: the namespace's own addresses stay its own.
const (
	allowRulePriority  = 100
	refuseRulePriority = 200
)

// nsSysctls are set in every isolated run's network namespace. The agent
// owns the namespace, so container root has no privilege in it: without
// these, only uids with CAP_NET_BIND_SERVICE in the namespace's owner
// could bind ports below 1024 and only root could ping.
var nsSysctls = [][2]string{
	{"/proc/sys/net/ipv4/ip_unprivileged_port_start", "0"},
	{"/proc/sys/net/ipv4/ping_group_range", pingGroups()},
}

// pingGroups is the ping_group_range of every group: in rootless mode the
// groups the agent's user namespace maps from 0 on (a group it cannot
// name is refused with EINVAL), otherwise all.
func pingGroups() string {
	ns, err := selfNS()
	if err != nil || initialUserNS(ns.gidMap) {
		return "0 2147483647"
	}
	next := uint64(0) // the first group not known to be mapped
	for progress := true; progress; {
		progress = false
		for _, m := range ns.gidMap {
			if next >= m.inside && next < m.inside+m.count {
				next, progress = m.inside+m.count, true
			}
		}
	}
	if next == 0 {
		return "1 0" // no group: the kernel's "nobody may ping"
	}
	return "0 " + strconv.FormatUint(min(next-1, 2147483647), 10)
}

// onNewThread runs fn on a goroutine locked to an OS thread, so that fn may
// move the thread into other network namespaces (and into nothing else):
// afterwards the thread is put back into the network namespace it was in
// and returned to the runtime, or, when that fails, thrown away (the
// runtime ends a thread whose goroutine exits locked). Threads are not
// thrown away as a rule: the kernel sends a child's parent-death signal
// when the thread that forked it ends, and other code of the process
// (a test's registry, a helper) may have forked from this one.
func onNewThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening the thread's network namespace: %w", err)
			return // the thread stays locked and ends
		}
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		unix.Close(orig)
		errc <- err
	}()
	return <-errc
}

// inNetns runs fn with the calling thread in the network namespace bound at
// path, on a thread of its own (see onNewThread).
func inNetns(path string, fn func() error) error {
	return onNewThread(func() error {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening network namespace: %w", err)
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("entering network namespace: %w", err)
		}
		return fn()
	})
}

// createNetns makes a new network namespace, owned by the agent's user
// namespace, bind-mounted on the file path (created, which must not exist),
// and runs setup inside it. On error the namespace is not left mounted.
func createNetns(path string, setup func() error) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	return onNewThread(func() (retErr error) {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("creating a network namespace: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding the network namespace: %w", err)
		}
		defer func() {
			if retErr != nil {
				_ = unix.Unmount(path, unix.MNT_DETACH)
			}
		}()
		return setup()
	})
}

// nsListeners are the sockets of a run's forwards, opened inside its
// network namespace.
type nsListeners struct {
	tcp []*net.TCPListener
	udp []*net.UDPConn
}

func (l *nsListeners) close() {
	for _, t := range l.tcp {
		t.Close()
	}
	for _, u := range l.udp {
		u.Close()
	}
}

// configureNetns sets up the network namespace the calling thread is in
// for plan p: loopback up, the sysctls, the rules, the addresses the
// forwards listen on, and their listening sockets.
func configureNetns(p *netPlan) (_ *nsListeners, retErr error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("loopback interface: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("loopback up: %w", err)
	}
	for _, s := range nsSysctls {
		if err := os.WriteFile(s[0], []byte(s[1]), 0); err != nil {
			return nil, fmt.Errorf("sysctl: %w", err)
		}
	}
	ipv6 := fileExists("/proc/sys/net/ipv6")
	for _, a := range p.local {
		if a.Is6() && !ipv6 {
			continue
		}
		addr := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, a.BitLen())), Flags: unix.IFA_F_NODAD}
		if err := h.AddrAdd(lo, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("adding %s to the loopback interface: %w", a, err)
		}
	}
	for _, t := range p.allowed {
		a := t.addr.Addr()
		if a.Is6() && !ipv6 {
			continue
		}
		r := netlink.NewRule()
		r.Priority = allowRulePriority
		r.Family = family(a)
		r.Dst = prefixNet(netip.PrefixFrom(a, a.BitLen()))
		r.IPProto = unix.IPPROTO_TCP
		if t.udp {
			r.IPProto = unix.IPPROTO_UDP
		}
		r.Dport = netlink.NewRulePortRange(t.addr.Port(), t.addr.Port())
		r.Table = unix.RT_TABLE_MAIN
		if err := h.RuleAdd(r); err != nil {
			return nil, fmt.Errorf("rule allowing %s: %w", t.addr, err)
		}
	}
	for _, pfx := range p.refused {
		if pfx.Addr().Is6() && !ipv6 {
			continue
		}
		r := netlink.NewRule()
		r.Priority = refuseRulePriority
		r.Family = family(pfx.Addr())
		r.Dst = prefixNet(pfx)
		r.Type = unix.RTN_PROHIBIT
		if err := h.RuleAdd(r); err != nil {
			return nil, fmt.Errorf("rule refusing %s: %w", pfx, err)
		}
	}
	l := &nsListeners{}
	defer func() {
		if retErr != nil {
			l.close()
		}
	}()
	for _, t := range p.proxied {
		if t.addr.Addr().Is6() && !ipv6 {
			continue
		}
		if t.udp {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(t.addr))
			if err != nil {
				return nil, fmt.Errorf("forward udp %s: %w", t.addr, err)
			}
			l.udp = append(l.udp, c)
			continue
		}
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(t.addr))
		if err != nil {
			return nil, fmt.Errorf("forward %s: %w", t.addr, err)
		}
		l.tcp = append(l.tcp, ln)
	}
	return l, nil
}

// nsLinks lists the interfaces of the network namespace the calling thread
// is in.
func nsLinks() ([]string, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names, nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func prefixNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
