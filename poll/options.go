package poll

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/vieter"
)

// Option configures an Agent.
type Option func(*options) error

type options struct {
	arch              string
	dataDir           string
	slots             int
	pollInterval      time.Duration
	grace             time.Duration
	deliverTimeout    time.Duration
	requestTimeout    time.Duration
	uploadTimeout     time.Duration
	backoffMin        time.Duration
	backoffMax        time.Duration
	unauthorizedRetry time.Duration
	defaultTimeout    time.Duration
	logLimit          int64
	fsync             bool
	log               logrus.FieldLogger
	obs               Observer
	clock             Clock
	origin            Origin // agent name, version, host: for log headers and Status
	lock              *DataDirLock
}

// silentLogger is the logger of a caller that sets none, or sets nil.
func silentLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func defaultOptions() options {
	return options{
		slots:             1,
		pollInterval:      30 * time.Second,
		grace:             5 * time.Minute,
		deliverTimeout:    30 * time.Second,
		requestTimeout:    time.Minute,
		uploadTimeout:     10 * time.Minute,
		backoffMin:        vieter.AgentRetry.Min,
		backoffMax:        vieter.AgentRetry.Max,
		unauthorizedRetry: vieter.AgentRetry.Unauthorized,
		defaultTimeout:    DefaultTimeout,
		logLimit:          DefaultLogLimit,
		fsync:             true,
		log:               silentLogger(),
		obs:               nopObserver{},
		clock:             realClock{},
		origin:            Origin{Host: hostname()},
	}
}

// hostname is the host's name for log headers, one line of at most 64
// bytes.
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	h = cleanHeaderValue(h)
	return h[:min(len(h), maxNameBytes)]
}

// maxNameBytes bounds the agent's name, version and host name.
const maxNameBytes = 64

// checkName checks a name for log headers and Status: one line, at most
// maxNameBytes.
func checkName(what, s string) error {
	if len(s) > maxNameBytes || cleanHeaderValue(s) != s {
		return fmt.Errorf("%s %q: want one line of at most %d bytes", what, s, maxNameBytes)
	}
	return nil
}

// WithAgentName sets the agent's name (agent_name), shown in Status and
// at the top of every build log. Default: none.
func WithAgentName(name string) Option {
	return func(o *options) error {
		if err := checkName("agent name", name); err != nil {
			return err
		}
		o.origin.Agent = name
		return nil
	}
}

// WithVersion sets the version of the program that runs the agent, shown
// in Status and at the top of every build log. Default: none.
func WithVersion(v string) Option {
	return func(o *options) error {
		if err := checkName("version", v); err != nil {
			return err
		}
		o.origin.Version = v
		return nil
	}
}

func positive(name string, d time.Duration, set *time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s must be positive, got %v", name, d)
	}
	*set = d
	return nil
}

// WithArch sets the architecture to poll jobs for and to report logs
// under. Required.
func WithArch(arch string) Option {
	return func(o *options) error {
		if arch == "" {
			return errors.New("empty arch")
		}
		o.arch = arch
		return nil
	}
}

// WithDataDir sets the directory for the log spool and the lock. Required.
func WithDataDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("empty data dir")
		}
		o.dataDir = dir
		return nil
	}
}

// WithDataDirLock hands Run the data directory's agent lock, taken by the
// caller with LockDataDir before anything else used the data directory
// (so that a second agent is refused before it touches anything). Run
// then does not take it itself, and does not release it. Default: Run
// takes the lock of the data directory (WithDataDir).
func WithDataDirLock(l *DataDirLock) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("nil data dir lock")
		}
		o.lock = l
		return nil
	}
}

// WithSlots sets the number of concurrent builds (max_concurrent_builds).
// Default 1.
func WithSlots(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("slots must be at least 1, got %d", n)
		}
		o.slots = n
		return nil
	}
}

// WithPollInterval sets the time between polls when no build finishes
// (polling_frequency); it also caps the poll backoff. Default 30s.
func WithPollInterval(d time.Duration) Option {
	return func(o *options) error { return positive("poll interval", d, &o.pollInterval) }
}

// WithGracePeriod sets how long running builds may go on after shutdown
// starts before they are cancelled. Default 5m.
func WithGracePeriod(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("grace period must not be negative, got %v", d)
		}
		o.grace = d
		return nil
	}
}

// WithDeliverTimeout sets how long, after the builds have stopped, the
// shutdown waits for logs and requeues to reach the server; what is left
// stays in the spool for the next start. Default 30s.
func WithDeliverTimeout(d time.Duration) Option {
	return func(o *options) error { return positive("deliver timeout", d, &o.deliverTimeout) }
}

// WithRequestTimeout bounds one poll or requeue request. Default 1m.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error { return positive("request timeout", d, &o.requestTimeout) }
}

// WithUploadTimeout bounds one log upload. Default 10m.
func WithUploadTimeout(d time.Duration) Option {
	return func(o *options) error { return positive("upload timeout", d, &o.uploadTimeout) }
}

// WithBackoff sets the first delay and the cap of the retry backoff for
// uploads and requeues (poll backoff is capped by the poll interval).
// Default 1s and 5m.
func WithBackoff(first, max time.Duration) Option {
	return func(o *options) error {
		if first <= 0 || max < first {
			return fmt.Errorf("invalid backoff %v..%v", first, max)
		}
		o.backoffMin, o.backoffMax = first, max
		return nil
	}
}

// WithUnauthorizedRetry sets the delay before retrying after the server
// rejected the API key. Default 5m.
func WithUnauthorizedRetry(d time.Duration) Option {
	return func(o *options) error { return positive("unauthorized retry", d, &o.unauthorizedRetry) }
}

// WithDefaultTimeout sets the build timeout for jobs without one. Default
// DefaultTimeout (1h).
func WithDefaultTimeout(d time.Duration) Option {
	return func(o *options) error { return positive("default timeout", d, &o.defaultTimeout) }
}

// WithLogLimit caps the log of one build at n bytes: the rest of a
// build's output is dropped, with a line that says so; the footer is kept.
// Default DefaultLogLimit (64 MiB).
func WithLogLimit(n int64) Option {
	return func(o *options) error {
		if n < 4096 {
			return fmt.Errorf("log limit must be at least 4096 bytes, got %d", n)
		}
		o.logLimit = n
		return nil
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

// WithFsync sets whether the log spool is synced to disk, so that pending
// logs survive a power loss and not only a crash of the agent. It costs
// two file syncs per job and a directory sync shared by the jobs that
// start together. Default true.
func WithFsync(sync bool) Option {
	return func(o *options) error {
		o.fsync = sync
		return nil
	}
}

// WithClock sets the clock of the polling loop (its poll interval and
// poll backoff). Default: the wall clock. For tests.
func WithClock(c Clock) Option {
	return func(o *options) error {
		if c == nil {
			return errors.New("nil clock")
		}
		o.clock = c
		return nil
	}
}

// WithObserver sets an observer that is told about polls, builds and
// uploads (for metrics). Default: none.
func WithObserver(obs Observer) Option {
	return func(o *options) error {
		if obs == nil {
			return errors.New("nil observer")
		}
		o.obs = obs
		return nil
	}
}
