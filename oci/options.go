package oci

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sirupsen/logrus"
)

// Option configures a Store. Options are applied in order; a later option
// for the same setting wins, except WithMirrors, WithInsecure, WithCABundle
// and WithCredentials, which add up.
type Option func(*options) error

type options struct {
	log               logrus.FieldLogger
	platform          v1.Platform
	mirrors           map[string][]string // registry host -> mirror endpoints, in order
	insecure          map[string]bool     // registry hosts
	caBundles         []string
	dockerConfig      string
	creds             map[string]credential
	parallelDownloads int
	progress          func(Progress)
	unpack            []UnpackOption
	sync              bool
	// dial, if set, replaces the network dialer (tests map host names to
	// loopback addresses with it).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

type credential struct{ user, pass string }

func defaultOptions() *options {
	return &options{
		log:               silentLogger(),
		platform:          DefaultPlatform(),
		mirrors:           map[string][]string{},
		insecure:          map[string]bool{},
		creds:             map[string]credential{},
		parallelDownloads: 3,
	}
}

// DefaultPlatform is the platform of the running agent: linux and the
// architecture vagent was built for.
func DefaultPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
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

// WithPlatform sets the platform picked from multi-platform images.
// Default: DefaultPlatform (linux and the agent's architecture).
func WithPlatform(p v1.Platform) Option {
	return func(o *options) error {
		if p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("platform needs an os and an architecture")
		}
		o.platform = p
		return nil
	}
}

// WithMirrors sets the mirrors for a registry host ("docker.io",
// "registry.example.com:5000"). Mirrors are tried in the given order before
// the origin, which is always tried last. A mirror is "host[:port]" or a URL
// "http://host[:port]" / "https://host[:port]"; an http URL makes that
// mirror insecure. Default: no mirrors.
func WithMirrors(host string, mirrors ...string) Option {
	return func(o *options) error {
		h, err := normalizeHost(host)
		if err != nil {
			return err
		}
		for _, m := range mirrors {
			mh, insecure, err := parseMirror(m)
			if err != nil {
				return err
			}
			if insecure {
				o.insecure[mh] = true
			}
			o.mirrors[h] = append(o.mirrors[h], mh)
		}
		return nil
	}
}

// WithInsecure marks registry hosts as insecure: plain HTTP is allowed and
// TLS certificates are not verified. Default: none (loopback registries
// may always use plain HTTP).
func WithInsecure(hosts ...string) Option {
	return func(o *options) error {
		for _, h := range hosts {
			nh, err := normalizeHost(h)
			if err != nil {
				return err
			}
			o.insecure[nh] = true
		}
		return nil
	}
}

// WithCABundle adds the PEM certificates in path to the system roots for
// TLS connections to registries. Default: system roots only.
func WithCABundle(path string) Option {
	return func(o *options) error {
		if path == "" {
			return fmt.Errorf("empty ca bundle path")
		}
		o.caBundles = append(o.caBundles, path)
		return nil
	}
}

// WithDockerConfig reads registry credentials from a Docker config.json at
// path (auths and credential helpers). Default: go-containerregistry's
// default keychain ($DOCKER_CONFIG, ~/.docker/config.json, podman's
// auth.json).
func WithDockerConfig(path string) Option {
	return func(o *options) error {
		o.dockerConfig = path
		return nil
	}
}

// WithCredentials sets a username and password for a registry host. They
// take precedence over the Docker config. Default: none.
func WithCredentials(host, user, pass string) Option {
	return func(o *options) error {
		h, err := normalizeHost(host)
		if err != nil {
			return err
		}
		o.creds[h] = credential{user: user, pass: pass}
		return nil
	}
}

// WithParallelDownloads bounds the number of blobs downloaded at once. Default: 3.
func WithParallelDownloads(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("jobs must be at least 1, not %d", n)
		}
		o.parallelDownloads = n
		return nil
	}
}

// WithProgress sets a function called with progress updates of pulls and
// unpacks. It is called from several goroutines at once and must be quick.
// Default: none.
func WithProgress(f func(Progress)) Option {
	return func(o *options) error {
		o.progress = f
		return nil
	}
}

// WithUnpackOptions sets options used when the store unpacks a rootfs
// (for example WithDevices). Default: none.
func WithUnpackOptions(opts ...UnpackOption) Option {
	return func(o *options) error {
		o.unpack = append(o.unpack, opts...)
		return nil
	}
}

// WithSync sets whether a finished rootfs (and the blobs of a Pull) are
// flushed to disk with syncfs before they are published, so that they
// survive a power loss. Without it, a rootfs is marked with the boot it was
// published in, and one from an earlier boot is discarded and unpacked
// again: a power loss can cost a new unpack, never a broken tree. syncfs
// flushes the whole file system, other programs' writes included, which
// on a busy host costs seconds. Default: false.
func WithSync(sync bool) Option {
	return func(o *options) error {
		o.sync = sync
		return nil
	}
}

// WithBudget sets the budget of every unpack of the store: the
// decompressed bytes, declared file sizes, entries and path depth one image
// may have (see Budget; zero fields keep their default). An image over it
// fails with ErrBudgetExceeded and leaves no tree behind.
// Default: DefaultBudget (32 GiB, 1 Mi entries, 256 components).
func WithBudget(b Budget) Option {
	return func(o *options) error {
		o.unpack = append(o.unpack, WithUnpackBudget(b))
		return nil
	}
}

// normalizeHost returns the registry host as go-containerregistry names it
// ("docker.io" becomes "index.docker.io").
func normalizeHost(h string) (string, error) {
	h = strings.TrimSpace(h)
	if h == "" || strings.ContainsAny(h, "/ \t") {
		return "", fmt.Errorf("%w: registry host %q", ErrBadReference, h)
	}
	if h == "docker.io" || h == "registry-1.docker.io" {
		return "index.docker.io", nil
	}
	return h, nil
}

func parseMirror(m string) (host string, insecure bool, err error) {
	if strings.Contains(m, "://") {
		u, err := url.Parse(m)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return "", false, fmt.Errorf("%w: mirror %q (want host[:port] or http(s)://host[:port])", ErrBadReference, m)
		}
		switch u.Scheme {
		case "http":
			insecure = true
		case "https":
		default:
			return "", false, fmt.Errorf("%w: mirror %q: scheme %q", ErrBadReference, m, u.Scheme)
		}
		m = u.Host
	}
	h, err := normalizeHost(m)
	return h, insecure, err
}

// UnpackOption configures Unpack.
type UnpackOption func(*unpackOptions) error

type unpackOptions struct {
	log      logrus.FieldLogger
	uidShift uint32
	gidShift uint32
	devices  bool
	verify   bool
	progress func(Progress)
	ref      string
	budget   Budget
}

func defaultUnpackOptions() *unpackOptions {
	return &unpackOptions{log: silentLogger(), verify: true, budget: DefaultBudget}
}

// WithUnpackBudget sets the budget of the unpack (see Budget; zero fields
// keep their default). Default: DefaultBudget.
func WithUnpackBudget(b Budget) UnpackOption {
	return func(o *unpackOptions) error {
		b, err := b.withDefaults()
		if err != nil {
			return err
		}
		o.budget = b
		return nil
	}
}

// WithIDShift adds uidOffset and gidOffset to the owner of every entry
// (container id + offset), for a rootfs used by a user namespace without an
// idmapped mount. Default: 0, 0 (ids as in the image).
func WithIDShift(uidOffset, gidOffset uint32) UnpackOption {
	return func(o *unpackOptions) error {
		o.uidShift, o.gidShift = uidOffset, gidOffset
		return nil
	}
}

// WithDevices sets whether character and block device entries are created.
// When not allowed, a device entry fails the unpack with ErrUnsafeEntry.
// Default: false (a device node in a build rootfs is a way out of the
// sandbox; builds get their /dev from the sandbox).
func WithDevices(allowed bool) UnpackOption {
	return func(o *unpackOptions) error {
		o.devices = allowed
		return nil
	}
}

// WithUnpackLogger sets the logger of Unpack. Default (and for nil): silent.
func WithUnpackLogger(l logrus.FieldLogger) UnpackOption {
	return func(o *unpackOptions) error {
		if l == nil {
			l = silentLogger()
		}
		o.log = l
		return nil
	}
}

// WithUnpackProgress sets a function called with extract progress.
// Default: none.
func WithUnpackProgress(f func(Progress)) UnpackOption {
	return func(o *unpackOptions) error {
		o.progress = f
		return nil
	}
}
