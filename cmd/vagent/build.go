package main

import (
	"context"
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
	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

const buildLong = `Build a PKGBUILD locally in a sandbox, like makechrootpkg.

SOURCE is a local directory holding a PKGBUILD (copied into the sandbox without
the outputs of earlier builds; it is not changed), a PKGBUILD file, a git
repository URL or the URL of a PKGBUILD (http(s)://.../PKGBUILD). The build runs
as on an agent, in a fresh sandbox on the builder image of --base-image, without
a server: no skip check, nothing published. The packages and the build log
(<pkgbase>-<version>-<arch>-build.log) are written next to the PKGBUILD (the
working directory for a remote SOURCE) or to --out, owned by the invoking user
(SUDO_UID under sudo); the log streams to standard output. A failed build says
which step failed. The exit status is the build's.

-I installs local packages first (makechrootpkg -I), --check compares the
packages with the repositories' (checkpkg), --inspect failure opens a shell in a
failed build's tree (makechrootpkg -x); makepkg's sources are kept in the data
dir for the next build (SRCDEST).`

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
	install  []string // -I
	check    bool
	inspect  string   // never, failure, always
	sources  bool     // --source-cache
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
	fs.StringVar(&f.out, "out", "", "write the packages and the build log to `DIR` (default: the PKGBUILD's directory for a local SOURCE, else the working directory)")
	fs.DurationVar(&f.timeout, "timeout", poll.DefaultTimeout, "kill the build after `D`")
	fs.StringArrayVar(&f.repoURLs, "repo-url", nil, "add the Pacman repository at `URL` for dependencies: its last path element is the repository name, "+
		"packages are at URL/$arch (a Vieter repository; repeatable)")
	fs.StringArrayVarP(&f.install, "install", "I", nil, "install the package `FILE` into the build before its dependencies are resolved, "+
		"as makechrootpkg -I does: a locally built dependency needs no repository (repeatable)")
	fs.BoolVar(&f.check, "check", false, "after a successful build, compare each package with the version in the build's repositories, "+
		"as checkpkg does: files added and removed, sonames provided and needed changed")
	fs.StringVar(&f.inspect, "inspect", "never", "open a shell as the builder user in the build's tree after a build that failed (`WHEN` failure) "+
		"or after any build (always), as makechrootpkg -x does; needs a terminal; everything is removed when the shell exits")
	fs.BoolVar(&f.sources, "source-cache", true, "keep makepkg's sources (SRCDEST: downloads, bare mirrors of VCS sources) in the source's cache of the data dir, "+
		"so the next build of the source downloads nothing again (checked against the PKGBUILD's checksums as usual)")
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
	keep, err := inspectWhen(f.inspect)
	if err != nil {
		return err
	}
	if keep != nil && !isTerminalFile(env.stdin) {
		return usageError("--inspect %s needs a terminal on standard input", f.inspect)
	}
	repos, err := parseRepoURLs(f.repoURLs)
	if err != nil {
		return err
	}
	// A local build publishes nothing: the job's repository only names
	// the build in logs, but the job must be as valid as a server's.
	j := poll.Job{Branch: f.branch, Path: f.subdir, BaseImage: f.base, Repo: localRepo}
	source, err := resolveSource(src, f.subdir)
	if err != nil {
		return err
	}
	localDir := source.dir
	if localDir != "" {
		if f.branch != "" {
			return usageError("--branch is for git sources")
		}
	} else {
		j.Kind, j.URL = source.kind, source.url
		if err := job.ValidateJob(j, true); err != nil {
			return usageError("%v", err)
		}
	}
	var install []string
	for _, p := range f.install {
		abs, err := filepath.Abs(p)
		if err == nil {
			err = job.CheckInstall(abs)
		}
		if err != nil {
			return fmt.Errorf("--install: %w", err)
		}
		install = append(install, abs)
	}
	outDir := f.out
	if outDir == "" {
		if outDir, err = source.defaultOutDir(); err != nil {
			return err
		}
	}
	if outDir, err = filepath.Abs(outDir); err != nil {
		return err
	}
	uid, gid := invokingUser(env.getenv)
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
	// Per-layer bars on a terminal while the base image is pulled.
	popts, endProgress := terminalPullProgress(env)
	defer endProgress()
	ropts = append(ropts, popts...)
	dataDir, cfg := f.af.dataDir, f.af.cfg
	// A host that cannot build pulls nothing: the probes of vagent check
	// first.
	sopts, err := preflightOptions(env.log, dataDir, cfg)
	if err != nil {
		return err
	}
	if err := preflight(dataDir, sopts, buildNeeds(bnet.mode, f.seccomp, networkHintBuild)); err != nil {
		return err
	}
	store, err := f.af.open(env, ropts...)
	if err != nil {
		return err
	}
	sb, _, err := openSandbox(env.log, dataDir, cfg, f.seccomp)
	if err != nil {
		return err
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
	cacheDir := filepath.Join(dataDir, pacmanCacheSubdir)
	opts := []job.Option{job.WithLogger(env.log), job.WithOutDir(outDir, uid, gid), job.WithLocalImages(true), job.WithInstall(install...), job.WithCheck(f.check), job.WithSourceCache(f.sources)}
	if keep != nil {
		opts = append(opts, job.WithInspect(keep))
	}
	logLimit := int64(poll.DefaultLogLimit)
	opts = append(opts, job.WithNetwork(bnet.mode, bnet.forward...), job.WithOfflineBuild(bnet.offline))
	if cfg != nil {
		cacheDir = pacmanCacheDir(cfg)
		logLimit = int64(cfg.BuildLimits.Log)
		opts = append(opts, job.WithArch(cfg.Arch), job.WithLimits(sandboxLimits(cfg)), job.WithCacheMaxSize(int64(cfg.PacmanCache.MaxSize)))
	}
	b, err := job.New(sb, job.BuilderImages(bm), filepath.Join(dataDir, "build"), append(opts, job.WithCacheDir(cacheDir))...)
	if err != nil {
		return err
	}
	// The log's header first, as an agent's build log has it; the
	// digests the build reports follow as header lines when known.
	hj := j
	if localDir != "" {
		hj.Kind, hj.URL = "dir", "file://"+localDir
	}
	arch := pacman.Arch(runtime.GOARCH)
	if cfg != nil {
		arch = cfg.Arch
	}
	blog, err := createBuildLog(env.stdout, outDir, uid, gid)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	if _, err := blog.Write(poll.LogHeader{Version: version, Host: host, Slot: -1, Arch: arch, Job: hj, Start: time.Now()}.Text()); err != nil {
		_, _ = blog.finish(nil, arch)
		return err
	}
	ctx = poll.WithProgress(ctx, &headerLines{w: blog})
	// The lifecycle of an agent's slot: the timeout, the classification
	// and the log's footer are poll.RunJob's; the Runner builds.
	var built *job.Built
	exec := poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) {
		var out poll.Outcome
		var err error
		built, out, err = b.Run(ctx, j, localDir, log)
		return out, err
	})
	rep := poll.RunJob(ctx, exec, j, f.timeout, logLimit, blog)
	var info *job.SrcInfo
	if built != nil {
		info = built.SrcInfo
	}
	logPath, lerr := blog.finish(info, arch)
	if lerr != nil {
		env.log.WithError(lerr).Warn("the build log could not be kept")
	} else {
		fmt.Fprintf(env.stderr, "build log: %s\n", logPath)
	}
	if built.Kept() {
		defer built.Release()
		inspectBuild(ctx, env, built, rep)
	}
	if rep.Result == poll.ResultSuccess {
		return nil
	}
	return &exitError{code: max(rep.ExitCode, 1), err: fmt.Errorf("%s", rep.Reason)}
}

// inspectWhen reads --inspect: the builds whose tree is kept for a shell
// (nil: none).
func inspectWhen(when string) (func(poll.Result) bool, error) {
	switch when {
	case "", "never":
		return nil, nil
	case "failure":
		return func(r poll.Result) bool { return r == poll.ResultFailure || r == poll.ResultTimeout }, nil
	case "always":
		// Not after Ctrl-C: who interrupts a build wants it gone.
		return func(r poll.Result) bool { return r != poll.ResultCancelled }, nil
	}
	return nil, usageError("--inspect %q: want never, failure or always", when)
}

// inspectBuild opens the shell of --inspect in the kept build on the
// user's terminal; the build's own result stays the command's.
func inspectBuild(ctx context.Context, env *cliEnv, built *job.Built, rep poll.Report) {
	w := env.stdout
	if u, ok := w.(interface{ Unwrap() io.Writer }); ok {
		w = u.Unwrap() // the terminal behind closedStdout
	}
	out, ok := w.(*os.File)
	if !ok {
		out = env.stdin
	}
	ut, err := openUserTerminal(env.stdin, out)
	if err != nil {
		env.log.WithError(err).Error("--inspect: cannot use the terminal")
		return
	}
	fmt.Fprintf(env.stderr, "vagent build: %s; a shell in its tree follows\r\n", rep.Reason)
	code, err := built.Inspect(ctx, job.Shell{Term: env.getenv("TERM"), Attach: ut.attach})
	ut.restore()
	built.Release()
	if err != nil {
		env.log.WithError(err).Error("--inspect")
		return
	}
	fmt.Fprintf(env.stderr, "vagent build: the shell exited with status %d; the build's tree is removed\n", code)
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
func (f *buildFlags) buildNetwork(cfg *config.Config, sourceURL string, repos []pacman.Repo) (buildNet, error) {
	n := buildNet{mode: sandbox.NetworkIsolated}
	if cfg != nil {
		n.mode, n.forward, n.offline = networkMode(cfg), buildForwards(cfg), cfg.BuildNetwork.OfflineBuild
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
// who ran sudo (SUDO_UID, SUDO_GID in getenv), or the process's own.
func invokingUser(getenv func(string) string) (uid, gid int) {
	uid, gid = os.Getuid(), os.Getgid()
	if uid == 0 && !rootless() { // rootless, uid 0 is the user
		if u, err := strconv.Atoi(getenv("SUDO_UID")); err == nil && u >= 0 {
			uid = u
			if g, err := strconv.Atoi(getenv("SUDO_GID")); err == nil && g >= 0 {
				gid = g
			}
		}
	}
	return uid, gid
}
