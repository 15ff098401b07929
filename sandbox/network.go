package sandbox

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// refusedPrefixes are the destinations no isolated run reaches, besides the
// host's own addresses and the Manager's WithNetworkDeny: link-local
// addresses (cloud metadata services answer there), multicast (a host's
// mDNS responder hears it) and the limited broadcast address.
var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("ff00::/8"),
	netip.MustParsePrefix("255.255.255.255/32"),
}

// RefusedPrefixes returns the destinations every isolated run is refused
// besides the host's own addresses and those of WithNetworkDeny.
func RefusedPrefixes() []netip.Prefix { return append([]netip.Prefix(nil), refusedPrefixes...) }

// ParseForward checks a Spec.Forward entry, "host:port": host is an IP
// address or a DNS name ("localhost" included), port 1-65535.
func ParseForward(s string) (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("forward %q: want host:port", s)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("forward %q: port must be 1-65535", s)
	}
	if _, err := netip.ParseAddr(h); err != nil && !validDNSName(h) {
		return "", 0, fmt.Errorf("forward %q: %q is neither an IP address nor a host name", s, h)
	}
	if a, err := netip.ParseAddr(h); err == nil && (a.Zone() != "" || a.IsUnspecified()) {
		return "", 0, fmt.Errorf("forward %q: want an address of one host, without zone", s)
	}
	return h, uint16(n), nil
}

// defaultPorts are the ports of URL schemes whose URLs may omit them.
var defaultPorts = map[string]string{"http": "80", "https": "443", "git": "9418", "ssh": "22", "ftp": "21"}

// URLEndpoint returns the Spec.Forward entry, "host:port", that lets a run
// reach the server of rawURL (http, https, git, ssh or ftp; the scheme's
// port when the URL has none). ok is false for other URLs (file://, a
// path) and for URLs without a host.
func URLEndpoint(rawURL string) (endpoint string, ok bool) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "", false
	}
	port := u.Port()
	if port == "" {
		if port = defaultPorts[strings.ToLower(u.Scheme)]; port == "" {
			return "", false
		}
	}
	ep := net.JoinHostPort(u.Hostname(), port)
	if _, _, err := ParseForward(ep); err != nil {
		return "", false
	}
	return ep, true
}

// ForwardsFor returns forward followed by the Spec.Forward entries of the
// servers of urls (URLEndpoint; other URLs are left out), each entry once.
func ForwardsFor(forward []string, urls ...string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(ep string) {
		if !seen[ep] {
			seen[ep] = true
			out = append(out, ep)
		}
	}
	for _, f := range forward {
		add(f)
	}
	for _, u := range urls {
		if ep, ok := URLEndpoint(u); ok {
			add(ep)
		}
	}
	return out
}

// ValidateNetwork checks a network mode and forward entries as Run does,
// for callers that take them as options.
func ValidateNetwork(mode NetworkMode, forward []string) error {
	if mode != NetworkIsolated && mode != NetworkHost && mode != NetworkNone {
		return fmt.Errorf("unknown network mode %d", int(mode))
	}
	for _, f := range forward {
		if _, _, err := ParseForward(f); err != nil {
			return err
		}
	}
	return nil
}

// validDNSName accepts host names: dot-separated labels of letters, digits
// and hyphens, not starting or ending with a hyphen.
func validDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// NetworkControl takes the network away from an isolated run while the run
// goes on. Make one per run with NewNetworkControl, set it in
// Spec.NetworkControl, and call Cut when what follows must run offline (a
// package's build() once its sources and dependencies are in).
type NetworkControl struct {
	mu  sync.Mutex
	cut bool
	err error
	fn  func() error // the live run's cut; nil before its network is up and after the run
}

// NewNetworkControl returns a NetworkControl for one run.
func NewNetworkControl() *NetworkControl { return &NetworkControl{} }

// ErrNetworkCut is wrapped by the errors of a run whose network could not
// be verified cut.
var ErrNetworkCut = errors.New("cutting the network")

// Cut takes the run's network away and returns once it is gone: pasta has
// exited and its interface is gone from the run's network namespace, which
// keeps only its loopback interface, and every forward is closed,
// connections in progress included. Nothing the run does can bring it back
// (the run has no privilege over its network namespace). Cut before the
// run's network is up makes the run start without one; after the run it
// does nothing. It is safe to call more than once and from several
// goroutines; every call returns the first one's result. An error wraps
// ErrNetworkCut: the network could not be verified gone, and the caller
// must not go on as if it were.
func (c *NetworkControl) Cut() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return c.err
	}
	c.cut = true
	if c.fn != nil {
		if err := c.fn(); err != nil {
			c.err = fmt.Errorf("%w: %w", ErrNetworkCut, err)
		}
	}
	return c.err
}

// IsCut reports whether Cut was called.
func (c *NetworkControl) IsCut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

// attach connects c to a run whose network is up; it reports whether the
// run must cut its network at once (Cut came first).
func (c *NetworkControl) attach(fn func() error) (cutNow bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return true
	}
	c.fn = fn
	return false
}

// detach disconnects c from a run that is ending.
func (c *NetworkControl) detach() {
	c.mu.Lock()
	c.fn = nil
	c.mu.Unlock()
}
