package job

import (
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/vieter"
)

// Option configures a Runner.
type Option func(*options) error

type options struct {
	log            logrus.FieldLogger
	server         *vieter.Client
	arch           string
	repos          []pacman.Repo
	outDir         string
	outUID, outGID int
	jobs           int
	limits         *sandbox.Limits
	retry          vieter.Retry
	localImages    bool
	// publishObserver is told how each package was confirmed ("" for not).
	publishObserver func(confirmedBy string)
	// cacheDir is the package caches' directory; cacheSet tells whether
	// WithCacheDir chose it ("" then means private caches only).
	cacheDir string
	cacheSet bool
	// cacheMaxSize bounds the package cache (0: no bound).
	cacheMaxSize int64
	// upperHook sees the upper directory of every finished run (tests).
	upperHook func(dir string)
	// network is the network of builds; forward the endpoints they reach
	// besides those of the server and repositories; offline cuts it
	// before build().
	network sandbox.NetworkMode
	forward []string
	offline bool
	// install are package files installed into every build (WithInstall).
	install []string
	// check compares the packages with the repositories' (WithCheck).
	check bool
	// inspect selects the builds that keep their tree (WithInspect).
	inspect func(poll.Result) bool
	// sourceCache keeps makepkg's sources in each target's cache
	// (WithSourceCache).
	sourceCache bool
	// twoPasses runs makepkg --nobuild first even without pkgver(): the
	// flow of earlier versions, for the benchmarks' comparison
	// (export_test.go).
	twoPasses bool
	// srcInfoWithin bounds the .SRCINFO's transfer from its first byte
	// (SrcInfoWithin; WithSrcInfoWithin in tests).
	srcInfoWithin time.Duration
}

// Defaults.
const (
	// DefaultArch is the architecture of this binary in Arch Linux terms.
	DefaultArch = "x86_64"
	// DefaultCacheMaxSize is the default bound of the package caches.
	DefaultCacheMaxSize = 16 << 30
)

func defaultOptions() *options {
	return &options{
		log:             silentLogger(),
		arch:            pacman.Arch(runtime.GOARCH),
		jobs:            runtime.NumCPU(),
		retry:           vieter.AgentRetry.Finite(5),
		publishObserver: func(string) {},
		outUID:          -1,
		outGID:          -1,
		cacheMaxSize:    DefaultCacheMaxSize,
		srcInfoWithin:   SrcInfoWithin,
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

// WithServer sets the Vieter server: the agent's client, which knows its
// address and API key. The key is only ever sent by the agent, never given
// to a build. Default: none, a local build without skip check and
// publishing.
func WithServer(c *vieter.Client) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("%w: nil server client", ErrBadConfig)
		}
		if _, err := checkServerURL(c.Address()); err != nil {
			return fmt.Errorf("%w: server address: %w", ErrBadConfig, err)
		}
		o.server = c
		return nil
	}
}

// WithPublishObserver sets a function told, for every package a build
// publishes, how the server confirmed it (vieter.ConfirmedByAnswer or
// vieter.ConfirmedByCheck), or "" when it could not be confirmed. Default:
// none.
func WithPublishObserver(f func(confirmedBy string)) Option {
	return func(o *options) error {
		if f == nil {
			return fmt.Errorf("%w: nil publish observer", ErrBadConfig)
		}
		o.publishObserver = f
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
		if err := pacman.ValidateArch(arch); err != nil {
			return fmt.Errorf("%w: %w", ErrBadConfig, err)
		}
		o.arch = arch
		return nil
	}
}

// WithRepos adds Pacman repositories to every build's pacman.conf, after
// the job's repository, each once. `vagent run` puts its configured
// repositories into the builder image instead (see package pacman); this
// is for a caller that needs a repository without a new builder image.
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

// WithRetry sets how often a transient failure of a server request is
// tried in all, and the first backoff (doubled each time, with jitter), of
// the agent's retry policy made finite (vieter.AgentRetry.Finite).
// Default: 5 attempts, 1s.
func WithRetry(attempts int, first time.Duration) Option {
	return func(o *options) error {
		if attempts < 1 || first < 0 {
			return fmt.Errorf("%w: retry %d, %s", ErrBadConfig, attempts, first)
		}
		o.retry = vieter.AgentRetry.Finite(attempts)
		o.retry.Min = first
		return nil
	}
}

// WithCacheDir sets the host directory of the Pacman package caches: one
// per target, mounted on /var/cache/pacman/pkg for one build of the target
// at a time, so that a target's dependencies are downloaded once and no
// build ever writes a file another build of another target reads (see
// cache_linux.go). An empty dir turns the caches off: each build then gets
// a private cache that is removed with it. Default: DIR/pacman-cache under
// the Runner's directory.
func WithCacheDir(dir string) Option {
	return func(o *options) error {
		if dir != "" && !filepath.IsAbs(dir) {
			return fmt.Errorf("cache dir %q: must be an absolute path", dir)
		}
		o.cacheDir, o.cacheSet = dir, true
		return nil
	}
}

// WithCacheMaxSize bounds the size of the package caches together (as the
// disk limit counts: allocated blocks, each file at least 4 KiB): after each
// build the least recently used targets' caches are removed until the
// caches fit, then, if needed, the oldest files of the target just built.
// 0 means no bound. Default: DefaultCacheMaxSize (16 GiB).
func WithCacheMaxSize(n int64) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("%w: negative package cache size %d", ErrBadConfig, n)
		}
		o.cacheMaxSize = n
		return nil
	}
}

// WithLocalImages lets base_image name local images (oci:DIR,
// docker-archive:FILE...). Only for a trusted caller such as `vagent
// build`: a job from a server may name registry images only. Default: off.
func WithLocalImages(on bool) Option {
	return func(o *options) error {
		o.localImages = on
		return nil
	}
}

// WithNetwork sets the network of builds (see sandbox.NetworkMode) and the
// host:port endpoints an isolated build reaches besides those the Runner
// puts into a build itself: the server of WithServer and the servers of
// WithRepos are always reachable, also on the host's loopback; forward
// names any other (e.g. a local git mirror). A job's own URLs are never
// forwarded: they come from the server and are untrusted. Default:
// sandbox.NetworkIsolated, no further endpoints.
func WithNetwork(mode sandbox.NetworkMode, forward ...string) Option {
	return func(o *options) error {
		if err := sandbox.ValidateNetwork(mode, forward); err != nil {
			return fmt.Errorf("%w: %w", ErrBadConfig, err)
		}
		o.network, o.forward = mode, append([]string(nil), forward...)
		return nil
	}
}

// WithOfflineBuild runs build() and package() without network: the
// sources and dependencies are fetched with it (makepkg --nobuild
// --syncdeps), then the agent cuts the build's network, forwards
// included, before it lets the build go on (sandbox.NetworkControl). A
// PKGBUILD that downloads in build() fails, and its log says why. It needs
// the isolated network. Default: off.
func WithOfflineBuild(on bool) Option {
	return func(o *options) error {
		o.offline = on
		return nil
	}
}

// WithInstall installs the package files paths into every build with
// pacman -U, before the build's dependencies are resolved (makechrootpkg
// -I): a locally built dependency needs no repository. Each is checked as
// a package the agent publishes (see CheckInstall) and copied for each
// build. Default: none.
func WithInstall(paths ...string) Option {
	return func(o *options) error {
		seen := map[string]bool{}
		for _, p := range paths {
			if !filepath.IsAbs(p) {
				return fmt.Errorf("%w: package %q: must be an absolute path", ErrBadConfig, p)
			}
			if err := pacman.ValidatePackageFile(filepath.Base(p)); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrBadConfig, filepath.Dir(p), err)
			}
			if seen[filepath.Base(p)] {
				return fmt.Errorf("%w: two packages named %s", ErrBadConfig, filepath.Base(p))
			}
			seen[filepath.Base(p)] = true
			o.install = append(o.install, p)
		}
		return nil
	}
}

// WithCheck compares, after each successful build, every package with the
// version the build's repositories hold, as devtools' checkpkg does:
// files added and removed, sonames provided and needed added and removed,
// printed into the log (job/script/checkpkg). The repositories' versions
// are downloaded before the build, while the build has the network; the
// comparison never fails the build. Default: off.
func WithCheck(on bool) Option {
	return func(o *options) error {
		o.check = on
		return nil
	}
}

// WithInspect keeps, after each build whose result keep selects (failure,
// timeout, success...; a build stopped before its sandbox ran keeps
// nothing), the build's tree and everything it ran on — the builder lease,
// the control directory, the package cache — for Built.Inspect, until
// Built.Release, which the caller must then call. Default: none.
func WithInspect(keep func(poll.Result) bool) Option {
	return func(o *options) error {
		o.inspect = keep
		return nil
	}
}

// WithSourceCache keeps makepkg's sources (SRCDEST: downloaded files,
// bare mirrors of VCS sources, which makepkg updates) in each target's
// cache beside its packages, so that a target's next build downloads
// nothing again; makepkg checks every source against the PKGBUILD's
// checksums as usual. It follows the package cache: one per target, one
// build of the target at a time, none for a build that gets a private
// cache or when the caches are off (WithCacheDir("")), and counted in
// WithCacheMaxSize. Per target, never shared across targets: a cache a
// build of one target could write and another read would be a way to
// poison the other's sources. Default: off (on in `vagent build`).
func WithSourceCache(on bool) Option {
	return func(o *options) error {
		o.sourceCache = on
		return nil
	}
}
