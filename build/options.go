package build

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/sandbox"
)

// Option configures a Builder.
type Option func(*options) error

// Repo is an extra Pacman repository added to the build's pacman.conf,
// for dependencies.
type Repo struct {
	// Name is the repository name ("[Name]").
	Name string
	// Server is the Server URL; pacman expands $repo and $arch.
	Server string
	// SigLevel is the repository's SigLevel (default "Optional"). Note that
	// pacman 6.0 downloads a cached package again when its signature is not
	// cached too, so an unsigned repository only profits from the shared
	// cache with "Never".
	SigLevel string
}

type options struct {
	log            logrus.FieldLogger
	address        string
	apiKey         string
	arch           string
	repos          []Repo
	outDir         string
	outUID, outGID int
	defaultTimeout time.Duration
	jobs           int
	limits         *sandbox.Limits
	client         *http.Client
	attempts       int
	backoff        time.Duration
	localImages    bool
	// cacheDir is the shared package cache; cacheSet tells whether
	// WithCacheDir chose it ("" then means no shared cache).
	cacheDir string
	cacheSet bool
	// upperHook sees the upper directory of every finished run (tests).
	upperHook func(dir string)
	logLimit  int64
}

// Defaults.
const (
	// DefaultTimeout is the build timeout of jobs without one (Vieter's
	// default timeout).
	DefaultTimeout = time.Hour
	// DefaultArch is the architecture of this binary in Arch Linux terms.
	DefaultArch = "x86_64"
)

func defaultOptions() *options {
	return &options{
		log:            discardLogger(),
		arch:           archOf(runtime.GOARCH),
		defaultTimeout: DefaultTimeout,
		jobs:           runtime.NumCPU(),
		client:         &http.Client{},
		attempts:       5,
		backoff:        500 * time.Millisecond,
		outUID:         -1,
		outGID:         -1,
		logLimit:       DefaultLogLimit,
	}
}

// archOf maps a Go architecture to Arch Linux's name for it.
func archOf(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i686"
	case "arm":
		return "armv7h"
	}
	return goarch
}

func discardLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return l
}

// WithLogger sets the logger. Default: silent.
func WithLogger(l logrus.FieldLogger) Option {
	return func(o *options) error {
		if l == nil {
			l = discardLogger()
		}
		o.log = l
		return nil
	}
}

// WithServer sets the Vieter server (its public URL, as the agent's
// address) and the API key used to publish. The key is only ever sent by
// the agent, never given to a build. Default: none, a local build without
// skip check and publishing.
func WithServer(address, apiKey string) Option {
	return func(o *options) error {
		a, err := checkServerURL(address)
		if err != nil {
			return fmt.Errorf("%w: server address: %w", ErrBadConfig, err)
		}
		if apiKey == "" || strings.ContainsAny(apiKey, "\r\n") {
			return fmt.Errorf("%w: api key is empty or has a line break", ErrBadConfig)
		}
		o.address, o.apiKey = a, apiKey
		return nil
	}
}

// checkServerURL accepts an http(s) URL without whitespace, query or
// fragment (it is written into pacman.conf) and returns it without a
// trailing slash.
func checkServerURL(s string) (string, error) {
	if strings.ContainsFunc(s, isSpaceOrControl) {
		return "", fmt.Errorf("%q has whitespace or control characters", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%q is not an http(s) URL without query, fragment or user", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// WithArch sets the architecture whose repository is checked and whose
// database is looked for (the agent's configured arch). Default: the arch
// of this binary (x86_64 on amd64).
func WithArch(arch string) Option {
	return func(o *options) error {
		if !repoNameRE.MatchString(arch) {
			return fmt.Errorf("%w: arch %q", ErrBadConfig, arch)
		}
		o.arch = arch
		return nil
	}
}

// WithRepos adds Pacman repositories for dependencies to every build's
// pacman.conf (after the job's repository). Default: none.
func WithRepos(repos ...Repo) Option {
	return func(o *options) error {
		for _, r := range repos {
			if !repoNameRE.MatchString(r.Name) {
				return fmt.Errorf("%w: repository name %q", ErrBadConfig, r.Name)
			}
			if _, err := checkServerURL(strings.NewReplacer("$repo", "repo", "$arch", "arch").Replace(r.Server)); err != nil {
				return fmt.Errorf("%w: repository %s: %w", ErrBadConfig, r.Name, err)
			}
			if r.SigLevel == "" {
				r.SigLevel = "Optional"
			}
			if !sigLevelRE.MatchString(r.SigLevel) {
				return fmt.Errorf("%w: repository %s: SigLevel %q", ErrBadConfig, r.Name, r.SigLevel)
			}
			o.repos = append(o.repos, r)
		}
		return nil
	}
}

var sigLevelRE = regexp.MustCompile(`^[A-Za-z]+( [A-Za-z]+)*$`)

// WithOutDir copies the packages a build produced into dir, owned by uid
// and gid (-1 keeps the agent's). Default: none.
func WithOutDir(dir string, uid, gid int) Option {
	return func(o *options) error {
		if dir == "" {
			return fmt.Errorf("%w: empty output directory", ErrBadConfig)
		}
		o.outDir, o.outUID, o.outGID = dir, uid, gid
		return nil
	}
}

// WithDefaultTimeout sets the timeout of jobs whose timeout is 0.
// Default: DefaultTimeout (1h).
func WithDefaultTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: timeout %s is not positive", ErrBadConfig, d)
		}
		o.defaultTimeout = d
		return nil
	}
}

// WithJobs sets N in MAKEFLAGS=-jN. Default: the number of CPUs.
func WithJobs(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: jobs %d", ErrBadConfig, n)
		}
		o.jobs = n
		return nil
	}
}

// WithLimits sets the cgroup limits of builds. Default: the sandbox
// Manager's defaults.
func WithLimits(l sandbox.Limits) Option {
	return func(o *options) error {
		o.limits = &l
		return nil
	}
}

// WithHTTPClient sets the client for the skip check and publishing.
// Default: a plain http.Client (requests are bounded by the build's
// context).
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("%w: nil http client", ErrBadConfig)
		}
		o.client = c
		return nil
	}
}

// WithRetry sets how often a transient failure of a server request is
// tried in all, and the first backoff (doubled each time, with jitter, at
// most 30s). Default: 5 attempts, 500ms.
func WithRetry(attempts int, first time.Duration) Option {
	return func(o *options) error {
		if attempts < 1 || first < 0 {
			return fmt.Errorf("%w: retry %d, %s", ErrBadConfig, attempts, first)
		}
		o.attempts, o.backoff = attempts, first
		return nil
	}
}

// WithLocalImages lets base_image name local images (oci:DIR,
// docker-archive:FILE...). Only for a trusted caller such as `vagent
// build`: a job from a server may name registry images only. Default: off.
// WithCacheDir sets the host directory of the Pacman package cache that
// every build shares (mounted on /var/cache/pacman/pkg), so dependencies
// are downloaded once. An empty dir turns the shared cache off: each build
// then gets a private cache that is removed with it. Default: DIR/pacman-cache
// under the Builder's directory.
func WithCacheDir(dir string) Option {
	return func(o *options) error {
		if dir != "" && !filepath.IsAbs(dir) {
			return fmt.Errorf("cache dir %q: must be an absolute path", dir)
		}
		o.cacheDir, o.cacheSet = dir, true
		return nil
	}
}

func WithLocalImages(on bool) Option {
	return func(o *options) error {
		o.localImages = on
		return nil
	}
}

// WithLogLimit caps what a build's processes write to its log at n bytes:
// past it one line says that the log was truncated and the rest is
// discarded (the agent's own lines, such as the summary, still follow).
// Default: DefaultLogLimit (64 MiB).
func WithLogLimit(n int64) Option {
	return func(o *options) error {
		if n < 1<<10 {
			return fmt.Errorf("%w: log limit %d below 1 KiB", ErrBadConfig, n)
		}
		o.logLimit = n
		return nil
	}
}
