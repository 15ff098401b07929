package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

func init() { register(newBuildCmd) }

const buildLong = `Build a PKGBUILD locally in a sandbox, like makechrootpkg.

SOURCE is a git repository URL, the URL of a PKGBUILD (http(s)://.../PKGBUILD)
or a local directory holding a PKGBUILD (copied into the sandbox; it is not
changed). The build runs as on an agent, in a fresh sandbox on the builder
image of --base-image, without a server: no skip check, nothing published.
The packages are written to --out, owned by the invoking user (SUDO_UID under
sudo); the log streams to standard output. The exit status is the build's.`

// buildFlags are the flags of `vagent build`.
type buildFlags struct {
	af       agentFlags
	rf       registryFlags
	mirrors  []string // --pacman-mirror
	base     string
	branch   string
	subdir   string
	out      string
	timeout  time.Duration
	repoURLs []string
	seccomp  bool
	network  string   // --network
	forward  []string // --forward
	offline  bool     // --offline-build
}

func newBuildCmd(env *cliEnv) *cobra.Command {
	var f buildFlags
	c := &cobra.Command{
		Use:   "build [flags] SOURCE",
		Short: "build a PKGBUILD locally in a sandbox, like makechrootpkg",
		Long:  buildLong,
		Args:  exactArgs(1, "one SOURCE"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := f.af.load(env, c); err != nil {
				return err
			}
			if f.af.cfg != nil && !c.Flags().Changed("timeout") {
				f.timeout = f.af.cfg.BuildTimeout.D()
			}
			return runBuild(c.Context(), env, &f, args[0])
		},
	}
	fs := c.Flags()
	f.af.register(c, "its data_dir, registries, builder_packages, pacman_mirrors, pacman_repos, build_limits, "+
		"build_timeout, id_range, pacman_cache and build_network, as the agent builds (flags given win)")
	f.rf.register(fs)
	fs.StringArrayVar(&f.mirrors, "pacman-mirror", nil, "use the Pacman mirror `URL` (https://HOST/archlinux/$repo/os/$arch) in the builder image "+
		"instead of the base image's (repeatable, in order; default: the configuration's pacman_mirrors)")
	fs.StringVar(&f.base, "base-image", "archlinux:base-devel", "base image `REF` of the builder image")
	fs.StringVar(&f.branch, "branch", "", "git `BRANCH` to build (default: the repository's default branch)")
	fs.StringVar(&f.subdir, "path", "", "`DIR` of the source holding the PKGBUILD")
	fs.StringVar(&f.out, "out", "out", "write the packages to `DIR`")
	fs.DurationVar(&f.timeout, "timeout", poll.DefaultTimeout, "kill the build after `D`")
	fs.StringArrayVar(&f.repoURLs, "repo-url", nil, "add the Pacman repository at `URL` for dependencies: its last path element is the repository name, "+
		"packages are at URL/$arch (a Vieter repository; repeatable)")
	fs.BoolVar(&f.seccomp, "seccomp", true, "filter the build's system calls (false for a binary built without seccomp support)")
	fs.StringVar(&f.network, "network", "", "the build's network `MODE`: isolated, host (unsafe) or none (default: the configuration's build_network.mode, isolated)")
	fs.StringArrayVar(&f.forward, "forward", nil, "let the isolated build reach `HOST:PORT` of this host (repeatable; the source, --repo-url and --pacman-mirror servers are reached without it)")
	fs.BoolVar(&f.offline, "offline-build", false, "run build() and package() without network (default: the configuration's build_network.offline_build)")
	return c
}

func runBuild(ctx context.Context, env *cliEnv, f *buildFlags, src string) error {
	if f.timeout <= 0 {
		return usageError("--timeout must be positive")
	}
	repos, err := parseRepoURLs(f.repoURLs)
	if err != nil {
		return err
	}
	// A local build publishes nothing: the job's repository only names
	// the build in logs, but the job must be as valid as a server's.
	j := poll.Job{Branch: f.branch, Path: f.subdir, BaseImage: f.base, Repo: localRepo}
	localDir, err := localSource(src)
	if err != nil {
		return err
	}
	if localDir != "" {
		if f.branch != "" {
			return usageError("--branch is for git sources")
		}
	} else {
		j.Kind, j.URL = sourceKind(src), src
		if err := job.ValidateJob(j, true); err != nil {
			return usageError("%v", err)
		}
	}
	outDir, err := filepath.Abs(f.out)
	if err != nil {
		return err
	}
	uid, gid := invokingUser()
	bnet, err := f.buildNetwork(f.af.cfg, j.URL, repos)
	if err != nil {
		return err
	}
	if f.network == "host" {
		env.log.Warn("--network host is unsafe: the build shares the host's network namespace (its loopback services, abstract unix sockets and ports)")
	}

	ropts, err := f.af.ociOptions(env, &f.rf)
	if err != nil {
		return err
	}
	dataDir, cfg := f.af.dataDir, f.af.cfg
	store, err := f.af.open(env, ropts...)
	if err != nil {
		return err
	}
	sopts := []sandbox.Option{sandbox.WithLogger(env.log), sandbox.WithSeccomp(f.seccomp)}
	if cfg != nil {
		sopts = append(sopts, cfg.SandboxOptions()...)
	}
	sb, err := sandbox.New(filepath.Join(dataDir, "sandbox"), sopts...)
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	defer sb.Close()
	warnUnlimited(env.log, sb)
	bopts := append(f.af.builderOptions(env), builder.WithNetwork(bnet.setupMode(), bnet.forward...))
	if len(f.mirrors) > 0 {
		bopts = append(bopts, builder.WithMirrorList(f.mirrors...))
	}
	if len(repos) > 0 {
		bopts = append(bopts, builder.WithRepos(repos...))
	}
	bm, err := builder.New(store, sb, filepath.Join(dataDir, "builders"), bopts...)
	if err != nil {
		return fmt.Errorf("builder images: %w", err)
	}
	defer bm.Close()
	// The package caches of the data dir, shared with `vagent run` (one
	// per target; a local build's is keyed by its source).
	cacheDir := filepath.Join(dataDir, pacmanCacheDir)
	opts := []job.Option{job.WithLogger(env.log), job.WithOutDir(outDir, uid, gid), job.WithLocalImages(true)}
	logLimit := int64(poll.DefaultLogLimit)
	opts = append(opts, job.WithNetwork(bnet.mode, bnet.forward...), job.WithOfflineBuild(bnet.offline))
	if cfg != nil {
		cacheDir = cfg.PacmanCacheDir()
		logLimit = int64(cfg.BuildLimits.Log)
		opts = append(opts, job.WithArch(cfg.Arch), job.WithLimits(cfg.Limits()), job.WithCacheMaxSize(int64(cfg.PacmanCache.MaxSize)))
	}
	b, err := job.New(sb, job.BuilderImages(bm), filepath.Join(dataDir, "build"), append(opts, job.WithCacheDir(cacheDir))...)
	if err != nil {
		return err
	}
	// The log's header first, as an agent's build log has it; the
	// digests the build reports follow as header lines when known.
	hj := j
	if localDir != "" {
		abs, err := filepath.Abs(localDir)
		if err != nil {
			return err
		}
		hj.Kind, hj.URL = "dir", "file://"+abs
	}
	arch := pacman.Arch(runtime.GOARCH)
	if cfg != nil {
		arch = cfg.Arch
	}
	host, _ := os.Hostname()
	if _, err := env.stdout.Write(poll.LogHeader{Version: version, Host: host, Slot: -1, Arch: arch, Job: hj, Start: time.Now()}.Text()); err != nil {
		return err
	}
	ctx = poll.WithProgress(ctx, &headerLines{w: env.stdout})
	// The lifecycle of an agent's slot: the timeout, the classification
	// and the log's footer are poll.RunJob's; the Runner builds.
	exec := poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) {
		_, out, err := b.Run(ctx, j, localDir, log)
		return out, err
	})
	rep := poll.RunJob(ctx, exec, j, f.timeout, logLimit, env.stdout)
	if rep.Result == poll.ResultSuccess {
		return nil
	}
	return &exitError{code: max(rep.ExitCode, 1), err: fmt.Errorf("%s", rep.Reason)}
}

// buildNet is the network of a local build.
type buildNet struct {
	mode    sandbox.NetworkMode
	forward []string
	offline bool
}

// setupMode is the network of the builder setup: isolated unless the
// build has the host's.
func (n buildNet) setupMode() sandbox.NetworkMode {
	if n.mode == sandbox.NetworkHost {
		return sandbox.NetworkHost
	}
	return sandbox.NetworkIsolated
}

// buildNetwork returns the network of the build: --network, --forward and
// --offline-build over the configuration's build_network. The servers the
// user named (the source URL, --repo-url, --pacman-mirror) are reached
// without a --forward: they are the invoking user's, not a server's job.
func (f *buildFlags) buildNetwork(cfg *Config, sourceURL string, repos []pacman.Repo) (buildNet, error) {
	n := buildNet{mode: sandbox.NetworkIsolated}
	if cfg != nil {
		n.mode, n.forward, n.offline = cfg.NetworkMode(), cfg.BuildForwards(), cfg.BuildNetwork.OfflineBuild
	}
	if f.network != "" {
		m, err := sandbox.ParseNetworkMode(f.network)
		if err != nil {
			return n, usageError("--network: %v", err)
		}
		n.mode = m
	}
	for _, fw := range f.forward {
		if _, _, err := sandbox.ParseForward(fw); err != nil {
			return n, usageError("--forward: %v", err)
		}
	}
	urls := append([]string{sourceURL}, f.mirrors...)
	for _, r := range repos {
		urls = append(urls, r.Servers...)
	}
	n.forward = sandbox.ForwardsFor(append(n.forward, f.forward...), urls...)
	n.offline = n.offline || f.offline
	if n.offline && n.mode != sandbox.NetworkIsolated {
		return n, usageError("--offline-build needs the isolated network, not %s", n.mode)
	}
	if n.mode != sandbox.NetworkIsolated {
		n.forward = nil
	}
	return n, nil
}

// headerLines prints the header fields a build reports (the digests of the
// base image and the builder) as header lines of `vagent build`'s log,
// which streams: they come once the builder is ready.
type headerLines struct {
	mu sync.Mutex
	w  io.Writer
}

func (h *headerLines) Phase(poll.Phase) {}

func (h *headerLines) Header(key, value string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = io.WriteString(h.w, poll.HeaderLine(key, value))
}

// localRepo is the repository name of a local build's job.
const localRepo = "local"

// localSource returns src when it names a local directory, "" when it is a
// URL (scheme://…, scp-like [user@]host:path, or a transport::address that
// validation refuses), and an error when it looks like a local path but
// names no directory: a mistyped directory is not taken for a git URL.
func localSource(src string) (string, error) {
	if isRemoteSource(src) {
		return "", nil
	}
	fi, err := os.Stat(src)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("source %s: no such directory (want a directory holding a PKGBUILD, a git URL or a PKGBUILD URL)", src)
	case err != nil:
		return "", fmt.Errorf("source: %w", err)
	case !fi.IsDir():
		return "", fmt.Errorf("source %s: not a directory (want the directory holding the PKGBUILD)", src)
	}
	return src, nil
}

// isRemoteSource tells a URL from a local path as git does: a path has no
// "://" and no ':' before its first '/'. Sources starting with '-' are
// never local (validation refuses them as URLs).
func isRemoteSource(src string) bool {
	if strings.HasPrefix(src, "-") || strings.Contains(src, "://") {
		return true
	}
	colon, slash := strings.IndexByte(src, ':'), strings.IndexByte(src, '/')
	return colon > 0 && (slash < 0 || colon < slash)
}

// sourceKind tells a PKGBUILD URL (http(s), last path element PKGBUILD)
// from a git repository.
func sourceKind(src string) string {
	if u, err := url.Parse(src); err == nil && (u.Scheme == "http" || u.Scheme == "https") && path.Base(u.Path) == "PKGBUILD" {
		return "url"
	}
	return "git"
}

// parseRepoURLs turns --repo-url values into builder repositories.
func parseRepoURLs(urls []string) ([]pacman.Repo, error) {
	var repos []pacman.Repo
	for _, s := range urls {
		u, err := url.Parse(strings.TrimRight(s, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usageError("--repo-url %q: want http(s)://HOST/.../REPO", s)
		}
		name := path.Base(u.Path)
		if job.ValidateRepo(name) != nil {
			return nil, usageError("--repo-url %q: the last path element must be a repository name", s)
		}
		repos = append(repos, pacman.Repo{Name: name, Servers: []string{u.String() + "/$arch"}, SigLevel: "Optional TrustAll"})
	}
	return repos, nil
}

// invokingUser returns the user the packages should belong to: the one
// who ran sudo, or the process's own.
func invokingUser() (uid, gid int) {
	uid, gid = os.Getuid(), os.Getgid()
	if uid == 0 && !rootless() { // rootless, uid 0 is the user
		if u, err := strconv.Atoi(os.Getenv("SUDO_UID")); err == nil && u >= 0 {
			uid = u
			if g, err := strconv.Atoi(os.Getenv("SUDO_GID")); err == nil && g >= 0 {
				gid = g
			}
		}
	}
	return uid, gid
}
