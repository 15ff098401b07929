package sandbox

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"
)

// Option configures a Manager.
type Option func(*options) error

type options struct {
	log          logrus.FieldLogger
	uidBase      uint32
	idSize       uint32
	idMapSet     bool // WithIDMap was given
	userns       bool
	seccomp      bool
	limits       Limits
	grace        time.Duration
	cgroupParent string
	tmpSize      int64
	netDeny      []netip.Prefix
	pasta        string
	// resolvConf is the resolver configuration isolated runs get, and
	// whose name servers they reach (tests change it).
	resolvConf string
}

// DefaultTmpSize is the default size of a run's /tmp tmpfs (see
// WithTmpSize).
const DefaultTmpSize = 1 << 30

// silentLogger is the logger of a caller that sets none, or sets nil.
func silentLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func defaultOptions() options {
	return options{
		log:        silentLogger(),
		uidBase:    100000,
		idSize:     65536,
		userns:     true,
		seccomp:    true,
		grace:      time.Second,
		tmpSize:    DefaultTmpSize,
		resolvConf: "/etc/resolv.conf",
	}
}

// WithLogger sets the logger. Default (and for nil): silent.
func WithLogger(l logrus.FieldLogger) Option {
	return func(o *options) error {
		if l == nil {
			l = silentLogger()
		}
		o.log = l
		return nil
	}
}

// WithIDMap sets the host id range that container ids 0..size-1 map to
// (default base 100000, size 65536; rootless, the ids 1-65536 of the
// agent's user namespace, which must map the range). The range must not
// contain host root and should not overlap ids used on the host.
func WithIDMap(base, size uint32) Option {
	return func(o *options) error {
		if base == 0 || size == 0 || uint64(base)+uint64(size) > 1<<32-1 {
			return fmt.Errorf("invalid id map base %d size %d", base, size)
		}
		o.uidBase, o.idSize, o.idMapSet = base, size, true
		return nil
	}
}

// WithUserNamespace turns the user namespace on or off (default on). Without
// it container root is host root: use only for measurements and trusted
// workloads.
func WithUserNamespace(on bool) Option {
	return func(o *options) error { o.userns = on; return nil }
}

// WithSeccomp turns the seccomp filter on or off (default on). When the
// binary lacks seccomp support New fails with ErrNoSeccomp unless this is
// set to false.
func WithSeccomp(on bool) Option {
	return func(o *options) error { o.seccomp = on; return nil }
}

// WithDefaultLimits sets the limits of runs whose Spec.Limits is nil
// (default: none).
func WithDefaultLimits(l Limits) Option {
	return func(o *options) error {
		if err := l.validate(); err != nil {
			return err
		}
		o.limits = l
		return nil
	}
}

// WithGrace sets the default time between SIGTERM and SIGKILL when a run's
// context ends (default 1s).
func WithGrace(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("negative grace period")
		}
		o.grace = d
		return nil
	}
}

// WithTmpSize sets the size in bytes of the tmpfs mounted on /tmp in every
// run (default DefaultTmpSize, 1 GiB): a run that fills it gets ENOSPC.
// Its pages are memory, charged to the run's memory limit.
func WithTmpSize(n int64) Option {
	return func(o *options) error {
		if n < 1<<20 {
			return fmt.Errorf("tmp size %d below 1 MiB", n)
		}
		o.tmpSize = n
		return nil
	}
}

// WithCgroupParent sets the name of the cgroup directory that holds the
// runs' cgroups (default "vagent-" followed by a hash of the data
// directory): at the root of every cgroup v1 hierarchy, below the agent's
// own cgroup on cgroup v2 (see cgroup_linux.go). The Manager owns it
// exclusively: New kills and removes whatever it finds in it.
func WithCgroupParent(name string) Option {
	return func(o *options) error {
		if name == "" || name == "." || name == ".." || containsSlash(name) {
			return fmt.Errorf("invalid cgroup parent %q", name)
		}
		o.cgroupParent = name
		return nil
	}
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return true
		}
	}
	return false
}

// WithNetworkDeny adds destinations that isolated runs are refused (e.g.
// private ranges, for sites that serve nothing to builds from them), besides
// RefusedPrefixes and the host's own addresses, which are always refused.
// A Spec.Forward endpoint is reached even when its address is denied.
// Default: none.
func WithNetworkDeny(prefixes ...netip.Prefix) Option {
	return func(o *options) error {
		for _, p := range prefixes {
			if !p.IsValid() {
				return fmt.Errorf("invalid network prefix %v", p)
			}
			o.netDeny = append(o.netDeny, p.Masked())
		}
		return nil
	}
}

// WithPasta sets the pasta binary of isolated runs: a path, or a name
// looked up in PATH when a run starts. Default: "pasta".
func WithPasta(path string) Option {
	return func(o *options) error {
		if path == "" {
			return fmt.Errorf("empty pasta path")
		}
		o.pasta = path
		return nil
	}
}
