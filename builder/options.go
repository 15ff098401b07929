package builder

import (
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/sandbox"
)

// Option configures a Manager.
type Option func(*options) error

type options struct {
	log          logrus.FieldLogger
	maxAge       time.Duration
	packages     []string
	mirrors      []string
	repos        []pacman.Repo
	network      sandbox.NetworkMode
	forward      []string
	setupTimeout time.Duration
	setupLimits  *sandbox.Limits
	retryAfter   time.Duration
	prepared     func(took time.Duration, err error)
	now          func() time.Time
}

// Defaults.
const (
	// DefaultMaxAge is Vieter's default image_rebuild_frequency (1440 minutes).
	DefaultMaxAge = 24 * time.Hour
	// DefaultSetupTimeout bounds one setup run.
	DefaultSetupTimeout = 30 * time.Minute
)

// DefaultPackages are the packages the setup installs, as the reference
// agent does.
var DefaultPackages = []string{"base-devel", "git"}

func defaultOptions() *options {
	return &options{
		log:          silentLogger(),
		maxAge:       DefaultMaxAge,
		packages:     DefaultPackages,
		setupTimeout: DefaultSetupTimeout,
		retryAfter:   time.Minute,
		now:          time.Now,
	}
}

func silentLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return l
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

// WithMaxAge sets the age after which a builder is rebuilt (the agent's
// image_rebuild_frequency). Default: 1440 minutes (DefaultMaxAge).
func WithMaxAge(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: max age %s is not positive", ErrBadConfig, d)
		}
		o.maxAge = d
		return nil
	}
}

var pkgName = regexp.MustCompile(`^[a-zA-Z0-9@_+][a-zA-Z0-9@._+-]*(/[a-zA-Z0-9@_+][a-zA-Z0-9@._+-]*)?$`)

// WithPackages sets the packages the setup installs with pacman -Syu
// --needed (names, or repo/name). Default: "base-devel", "git"
// (DefaultPackages). An empty list only upgrades the system.
func WithPackages(pkgs ...string) Option {
	return func(o *options) error {
		for _, p := range pkgs {
			if !pkgName.MatchString(p) {
				return fmt.Errorf("%w: package name %q", ErrBadConfig, p)
			}
		}
		o.packages = append([]string(nil), pkgs...)
		return nil
	}
}

// WithMirrorList sets the servers written to the builder's
// /etc/pacman.d/mirrorlist ("Server = URL" lines, in order), which the
// standard Arch repositories include: how an air-gapped site points the
// builder (and every build) at its own mirror. Default: the image's own
// mirror list, unchanged.
func WithMirrorList(servers ...string) Option {
	return func(o *options) error {
		for _, s := range servers {
			if err := pacman.ValidateServer(s); err != nil {
				return fmt.Errorf("%w: mirror: %w", ErrBadConfig, err)
			}
		}
		o.mirrors = append([]string(nil), servers...)
		return nil
	}
}

// WithRepos adds Pacman repositories to the builder's /etc/pacman.conf,
// after those of the image, in the order given: the setup can install
// from them and every build on the builder sees them (see package pacman).
// Default: none.
func WithRepos(repos ...pacman.Repo) Option {
	return func(o *options) error {
		for _, r := range repos {
			r, err := r.Validate()
			if err != nil {
				return fmt.Errorf("%w: %w", ErrBadConfig, err)
			}
			o.repos = append(o.repos, r)
		}
		return nil
	}
}

// WithSetupTimeout bounds one setup run (pacman -Syu and the rest).
// Default: 30 minutes (DefaultSetupTimeout).
func WithSetupTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: setup timeout %s is not positive", ErrBadConfig, d)
		}
		o.setupTimeout = d
		return nil
	}
}

// WithSetupLimits sets the cgroup limits of the setup run. Default: the
// sandbox Manager's default limits.
func WithSetupLimits(l sandbox.Limits) Option {
	return func(o *options) error {
		o.setupLimits = &l
		return nil
	}
}

// WithRetryAfter sets how long a failed background refresh of a stale
// builder waits before another Acquire may try again (a missing builder is
// always prepared at once). Default: 1 minute.
func WithRetryAfter(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("%w: retry delay %s is negative", ErrBadConfig, d)
		}
		o.retryAfter = d
		return nil
	}
}

// WithPrepareObserver sets a function called after every preparation of a
// builder (pulling the base, the setup, the layer and the image), with how
// long it took and its error (nil when a new builder was made). Finding a
// builder fresh, or a refresh finding its base unchanged, is not a
// preparation. The agent's metrics count preparations with it. Default:
// none.
func WithPrepareObserver(f func(took time.Duration, err error)) Option {
	return func(o *options) error {
		o.prepared = f
		return nil
	}
}

// withClock replaces the clock (tests).
func withClock(now func() time.Time) Option {
	return func(o *options) error {
		o.now = now
		return nil
	}
}

// WithNetwork sets the network of the setup runs (see sandbox.NetworkMode)
// and the host:port endpoints an isolated setup reaches besides the
// servers of WithMirrorList and WithRepos, which it always reaches, also
// on the host's loopback. Default: sandbox.NetworkIsolated, no further
// endpoints.
func WithNetwork(mode sandbox.NetworkMode, forward ...string) Option {
	return func(o *options) error {
		if err := sandbox.ValidateNetwork(mode, forward); err != nil {
			return fmt.Errorf("%w: %w", ErrBadConfig, err)
		}
		o.network, o.forward = mode, append([]string(nil), forward...)
		return nil
	}
}

// setupForwards are the endpoints an isolated setup reaches: the mirrors,
// the repositories' servers and WithNetwork's.
func (o *options) setupForwards() []string {
	if o.network != sandbox.NetworkIsolated {
		return nil
	}
	urls := append([]string(nil), o.mirrors...)
	for _, r := range o.repos {
		urls = append(urls, r.Servers...)
	}
	return sandbox.ForwardsFor(o.forward, urls...)
}
