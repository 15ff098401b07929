package vieterserver

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
)

// Option configures a Server.
type Option func(*options) error

type options struct {
	apiKey      string
	defaultArch string
	dataDir     string
	emptyDB     bool
	log         logrus.FieldLogger
	faults      *FaultConfig
	hook        func(route string, r *http.Request)
	now         func() time.Time
}

func defaultOptions() options {
	return options{
		apiKey:      "test-key",
		defaultArch: "x86_64",
		log:         silentLogger(),
		now:         time.Now,
	}
}

func silentLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(discard{})
	l.SetLevel(logrus.PanicLevel)
	return l
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// WithAPIKey sets the key expected in X-Api-Key. Default "test-key".
func WithAPIKey(key string) Option {
	return func(o *options) error {
		if key == "" {
			return errors.New("empty api key")
		}
		o.apiKey = key
		return nil
	}
}

// WithDefaultArch sets the server's default architecture, which receives
// packages of arch "any". Default "x86_64".
func WithDefaultArch(arch string) Option {
	return func(o *options) error {
		if !validName(arch) {
			return fmt.Errorf("invalid arch %q", arch)
		}
		o.defaultArch = arch
		return nil
	}
}

// WithDataDir also writes logs (logs/<id>.log) and repository files
// (repos/<repo>/<arch>/...) below dir. Default: memory only.
func WithDataDir(dir string) Option {
	return func(o *options) error {
		o.dataDir = dir
		return nil
	}
}

// WithEmptyRepoDB makes an arch-repo without packages answer with an empty
// database instead of 404. Default false: the real server answers 404.
func WithEmptyRepoDB(serve bool) Option {
	return func(o *options) error {
		o.emptyDB = serve
		return nil
	}
}

// WithLogger sets the logger for requests and errors. Default (and for
// nil): silent.
func WithLogger(l logrus.FieldLogger) Option {
	return func(o *options) error {
		if l == nil {
			l = silentLogger()
		}
		o.log = l
		return nil
	}
}

// WithFaults enables fault injection. Default: none.
func WithFaults(fc FaultConfig) Option {
	return func(o *options) error {
		if fc.Rate < 0 || fc.Rate > 1 {
			return fmt.Errorf("fault rate %v out of [0,1]", fc.Rate)
		}
		o.faults = &fc
		return nil
	}
}

// WithHook calls hook(route, r) at the start of every request to a known
// route, before authentication and fault injection. A hook may block, for
// example to hold a log upload in flight. Default: none.
func WithHook(hook func(route string, r *http.Request)) Option {
	return func(o *options) error {
		o.hook = hook
		return nil
	}
}

// WithClock sets the time source used for poll records. Default time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return errors.New("nil clock")
		}
		o.now = now
		return nil
	}
}
