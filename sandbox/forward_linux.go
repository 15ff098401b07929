package sandbox

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Bounds of the agent's forwards of one run: what a build can make the
// agent hold open.
const (
	maxForwardConns    = 256              // TCP connections at a time
	maxForwardSessions = 256              // UDP clients at a time
	forwardDialTimeout = 10 * time.Second // connecting to the host's endpoint
	udpSessionIdle     = 30 * time.Second // a UDP client without traffic is forgotten
)

// forwarder forwards the connections a run makes to its listeners, each to
// exactly the same address on the host. Its goroutines run on threads in
// the host's network namespace; the listeners were opened in the run's.
type forwarder struct {
	log    logrus.FieldLogger
	ctx    context.Context
	cancel context.CancelFunc
	lst    *nsListeners
	slots  chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	open   map[io.Closer]struct{}
	closed bool
}

func startForwarder(l *nsListeners, log logrus.FieldLogger) *forwarder {
	ctx, cancel := context.WithCancel(context.Background())
	f := &forwarder{log: log, ctx: ctx, cancel: cancel, lst: l, slots: make(chan struct{}, maxForwardConns), open: map[io.Closer]struct{}{}}
	for _, ln := range l.tcp {
		f.wg.Add(1)
		go f.serveTCP(ln)
	}
	for _, c := range l.udp {
		f.wg.Add(1)
		go f.serveUDP(c)
	}
	return f
}

// track registers c to be closed by close; it reports false (and closes c)
// when the forwarder is closed already.
func (f *forwarder) track(c io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.open[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c io.Closer) {
	f.mu.Lock()
	delete(f.open, c)
	f.mu.Unlock()
	c.Close()
}

// close closes the listeners and every connection, and waits for the
// forwarder's goroutines.
func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.open {
		c.Close()
	}
	f.open = nil
	f.mu.Unlock()
	f.cancel()
	f.lst.close()
	f.wg.Wait()
}

func (f *forwarder) serveTCP(ln *net.TCPListener) {
	defer f.wg.Done()
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	log := f.log.WithField("forward", target.String())
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.WithError(err).Warn("forward stopped")
			}
			return
		}
		select {
		case f.slots <- struct{}{}:
		default:
			log.Warn("forward: too many connections, refusing one")
			c.Close()
			continue
		}
		if !f.track(c) {
			<-f.slots
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-f.slots }()
			defer f.untrack(c)
			f.proxyTCP(c, target, log)
		}()
	}
}

// proxyTCP connects c to target on the host and copies both ways until
// both sides are done.
func (f *forwarder) proxyTCP(c *net.TCPConn, target netip.AddrPort, log logrus.FieldLogger) {
	d := net.Dialer{Timeout: forwardDialTimeout}
	hc, err := d.DialContext(f.ctx, "tcp", target.String())
	if err != nil {
		log.WithError(err).Debug("forward: cannot reach the host's endpoint")
		return
	}
	h := hc.(*net.TCPConn)
	if !f.track(h) {
		return
	}
	defer f.untrack(h)
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src *net.TCPConn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src) // splice(2) between the sockets
		_ = dst.CloseWrite()
	}
	go cp(h, c)
	go cp(c, h)
	wg.Wait()
}

// udpSession is one client of a UDP forward: its own socket to the host's
// endpoint, so that answers find their way back.
type udpSession struct {
	conn *net.UDPConn
}

func (f *forwarder) serveUDP(c *net.UDPConn) {
	defer f.wg.Done()
	target := c.LocalAddr().(*net.UDPAddr).AddrPort()
	log := f.log.WithField("forward", "udp "+target.String())
	var mu sync.Mutex
	sessions := map[netip.AddrPort]*udpSession{}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.WithError(err).Warn("forward stopped")
			}
			return
		}
		mu.Lock()
		s := sessions[from]
		if s == nil {
			if len(sessions) >= maxForwardSessions {
				mu.Unlock()
				continue // dropped, as a busy server drops datagrams
			}
			hc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
			if err != nil {
				mu.Unlock()
				log.WithError(err).Debug("forward: cannot reach the host's endpoint")
				continue
			}
			if !f.track(hc) {
				mu.Unlock()
				return
			}
			s = &udpSession{conn: hc}
			sessions[from] = s
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer func() {
					mu.Lock()
					delete(sessions, from)
					mu.Unlock()
					f.untrack(hc)
				}()
				rb := make([]byte, 64<<10)
				for {
					_ = hc.SetReadDeadline(time.Now().Add(udpSessionIdle))
					n, err := hc.Read(rb)
					if err != nil {
						return
					}
					if _, err := c.WriteToUDPAddrPort(rb[:n], from); err != nil {
						return
					}
				}
			}()
		}
		mu.Unlock()
		_, _ = s.conn.Write(buf[:n])
	}
}
