package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

// Paths inside the container.
const (
	ctlMount   = "/run/vagent"
	srcMount   = "/run/vagent-src"
	cacheMount = "/var/cache/pacman/pkg"
	// srcCacheMount is makepkg's SRCDEST when the target has a source
	// cache (WithSourceCache).
	srcCacheMount = "/var/cache/vagent/sources"
	outDir        = "build/out" // PKGDEST, relative to the root
)

// containerPath is the PATH of the reference agent's builds.
const containerPath = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/bin/site_perl:/usr/bin/vendor_perl:/usr/bin/core_perl"

// run runs one job in four phases, each of which ends the build with one
// ending or hands the next what it prepared:
//
//  1. check: the job's fields (untrusted) and the source directory;
//  2. prepare: the builder lease, the repositories, the control directory
//     and the package cache — one *workspace whose release undoes all of
//     it, whatever happens next;
//  3. sandbox: the build script in one sandbox run, with the agent's
//     decision through the FIFOs — one *ran whose release removes the
//     kept upper directory;
//  4. collect: the packages from the upper directory, published or copied
//     out.
func (b *Runner) run(ctx context.Context, job poll.Job, srcDir string, log io.Writer, built *Built) ending {
	if e, ok := b.check(job, srcDir); !ok {
		return e
	}
	ws, e := b.prepare(ctx, job, log)
	if ws == nil {
		return e
	}
	kept := false
	defer func() {
		if !kept {
			ws.release()
		}
	}()
	ran, e := b.runSandbox(ctx, job, srcDir, ws, log)
	if ran == nil {
		return e
	}
	defer func() {
		if !kept {
			ran.release()
		}
	}()
	built.SrcInfo = ran.decision.info
	e = b.finish(ctx, job, ran, log, built)
	// A build to inspect keeps its tree and everything it ran on until
	// the caller's Built.Release.
	if b.opts.inspect != nil && ran.res.Upper != nil && b.opts.inspect(inspectResult(ctx, e.result)) {
		kept = true
		built.kept = &keptBuild{b: b, job: job, ws: ws, ran: ran}
	}
	return e
}

// finish ends a build whose sandbox ran: its verdict, then, for a build
// that succeeded, its packages.
func (b *Runner) finish(ctx context.Context, job poll.Job, ran *ran, log io.Writer, built *Built) ending {
	if e, done := ran.verdict(ctx); done {
		return e
	}
	return b.collect(ctx, job, ran, log, built)
}

// check validates the job (every field is untrusted) and a local source
// directory. Nothing is acquired yet.
func (b *Runner) check(job poll.Job, srcDir string) (ending, bool) {
	if srcDir != "" {
		if fi, err := os.Stat(srcDir); err != nil || !fi.IsDir() {
			if err == nil {
				err = fmt.Errorf("%s is not a directory", srcDir)
			}
			return ending{result: poll.ResultSetupError, code: poll.ExitSetupError, err: err, setup: true}, false
		}
	}
	var err error
	if srcDir == "" {
		err = ValidateJob(job, b.opts.localImages)
	} else {
		err = errors.Join(ValidatePath(job.Path), validateBaseImage(job.BaseImage, b.opts.localImages))
	}
	if err == nil && b.opts.server != nil {
		err = ValidateRepo(job.Repo)
	}
	if err != nil {
		return ending{result: poll.ResultFailure, code: ExitInvalidJob, err: err}, false
	}
	return ending{}, true
}

// workspace is what a build needs before its sandbox runs. release undoes
// all of it, in reverse order; it runs once.
type workspace struct {
	rootfs string        // the builder's rootfs, leased
	url    string        // the job's URL without credentials (splitCredentials)
	repos  []pacman.Repo // the repositories added to the build's pacman.conf
	run    *runDir       // the control directory
	cache  string        // the package cache tree to mount (see cache_linux.go)
	// sources is the target's source cache tree to mount ("": none).
	sources string
	undo    []func()
}

func (w *workspace) release() {
	for i := len(w.undo) - 1; i >= 0; i-- {
		w.undo[i]()
	}
	w.undo = nil
}

// prepare leases the builder of the job's base image, finds the
// repositories of the build's pacman.conf, and creates the control
// directory and the package cache. On failure it releases what it got and
// returns a nil workspace.
func (b *Runner) prepare(ctx context.Context, job poll.Job, log io.Writer) (_ *workspace, _ ending) {
	ws := &workspace{}
	ok := false
	defer func() {
		if !ok {
			ws.release()
		}
	}()
	fmt.Fprintf(log, "+ vagent: builder image for %s\n", strconv.Quote(job.BaseImage))
	rootfs, release, err := b.images.Acquire(ctx, job.BaseImage, log)
	if err != nil {
		return nil, setupFailed(ctx, "builder image", err)
	}
	ws.rootfs = rootfs
	ws.undo = append(ws.undo, release)

	repos, err := b.pacmanRepos(ctx, job.Repo, log)
	if err != nil {
		return nil, setupFailed(ctx, "checking the repository", err)
	}
	ws.repos = repos
	var creds *urlCredentials
	ws.url, creds = splitCredentials(job.URL)
	ws.run, err = b.newRun(repos, creds)
	if err != nil {
		return nil, setupFailed(ctx, "preparing the build", err)
	}
	ws.undo = append(ws.undo, ws.run.remove)
	cache, err := b.leaseCache(job, log)
	if err != nil {
		return nil, setupFailed(ctx, "preparing the package cache", err)
	}
	ws.cache, ws.sources = cache.tree, cache.src
	ws.undo = append(ws.undo, cache.release)
	ok = true
	return ws, ending{}
}

// ran is a finished sandbox run: its result and the agent's decision.
type ran struct {
	res      *sandbox.Result
	decision decision
	release  func()
	// diskLimit names the disk limit for an ending over it.
	diskLimit string
}

// runSandbox runs the build script in the sandbox on the workspace, with
// the agent answering the script's question (build or skip) through the
// FIFOs. It returns nil and the ending when the run could not start or was
// stopped before it ended.
func (b *Runner) runSandbox(ctx context.Context, job poll.Job, srcDir string, ws *workspace, log io.Writer) (*ran, ending) {
	if srcDir != "" {
		ex, err := b.sourceExcludes(srcDir, job.Path)
		if err == nil {
			err = writeExcludes(ws.run.dir, ex)
		}
		if err != nil {
			return nil, setupFailed(ctx, "reading the source", err)
		}
	}
	if err := b.copyInstall(ws.run.dir); err != nil {
		return nil, setupFailed(ctx, "copying the packages to install", err)
	}
	// An offline build(): the agent cuts the network before it answers
	// "build".
	var ctl *sandbox.NetworkControl
	var cut func() error
	if b.opts.offline {
		ctl = sandbox.NewNetworkControl()
		cut = ctl.Cut
	}
	decided := make(chan decision, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		decided <- b.negotiate(ctx, ws.run, job, cut)
	}()
	spec := b.spec(job, ws, log)
	spec.NetworkControl = ctl
	if srcDir != "" {
		spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: srcDir, Target: srcMount, ReadOnly: true, IDMapped: true})
	}
	b.opts.log.WithFields(logrus.Fields{"target": job.TargetID, "repo": job.Repo}).Debug("build starting")
	poll.ReportPhase(ctx, poll.PhaseBuilding)
	res, err := b.sb.Run(ctx, spec)
	ws.run.closeFIFOs()
	wg.Wait()
	r := &ran{res: res, decision: <-decided, release: func() {}, diskLimit: "its disk limit"}
	if err != nil {
		return nil, setupFailed(ctx, "starting the build", err)
	}
	if b.opts.limits != nil && b.opts.limits.Disk > 0 {
		r.diskLimit = fmt.Sprintf("its disk limit of %d bytes", b.opts.limits.Disk)
	}
	if res.DiskExceeded {
		fmt.Fprintf(log, "vagent: the build wrote more than %s (build_limits.disk): stopped\n", r.diskLimit)
	}
	if res.Upper != nil {
		if b.opts.upperHook != nil {
			b.opts.upperHook(res.Upper.Path)
		}
		r.release = func() {
			if err := res.Upper.Release(); err != nil {
				b.opts.log.WithError(err).Warn("removing the build's upper directory")
			}
		}
	}
	return r, ending{}
}

// spec is the sandbox run of the build script on the workspace, for the
// build (runSandbox) and an inspection (Built.Inspect).
func (b *Runner) spec(job poll.Job, ws *workspace, log io.Writer) sandbox.Spec {
	// An offline build(): the agent cuts the network before it answers
	// "build" (runSandbox's NetworkControl).
	offline := "0"
	if b.opts.offline {
		offline = "1"
	}
	spec := sandbox.Spec{
		Lower: ws.rootfs,
		Args:  []string{"/bin/bash", ctlMount + "/build.sh"},
		Env: []string{
			"PATH=" + containerPath, "HOME=/root", "LANG=C.UTF-8",
			"VAGENT_KIND=" + job.Kind, "VAGENT_URL=" + ws.url, "VAGENT_BRANCH=" + job.Branch,
			"VAGENT_PATH=" + job.Path, "VAGENT_JOBS=" + strconv.Itoa(b.opts.jobs),
			"VAGENT_OFFLINE=" + offline, "VAGENT_CHECK=" + strconv.FormatBool(b.opts.check),
		},
		Dir:      "/",
		Hostname: "localhost", // resolvable through the host's /etc/hosts (sudo looks it up)
		Mounts: []sandbox.Mount{
			{Source: ws.run.dir, Target: ctlMount, ReadOnly: true},
			{Source: ws.cache, Target: cacheMount}, // owned by the mapped root: no id mapping
		},
		Limits:    b.opts.limits,
		KeepUpper: true,
		Output:    log,
		Network:   b.opts.network,
		Forward:   b.forwards(ws.repos),
	}
	if b.opts.twoPasses {
		spec.Env = append(spec.Env, "VAGENT_PASSES=2")
	}
	if ws.sources != "" {
		spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: ws.sources, Target: srcCacheMount}) // the mapped root's, as the package cache
		spec.Env = append(spec.Env, "VAGENT_SRCDEST="+srcCacheMount)
	}
	return spec
}

// verdict ends the build unless the script ran to a successful end after
// the agent said "build".
func (r *ran) verdict(ctx context.Context) (ending, bool) {
	res, d := r.res, r.decision
	switch {
	case res.TimedOut, res.Cancelled, ctx.Err() != nil:
		return stopped, true
	case res.DiskExceeded:
		return ending{result: poll.ResultFailure, code: max(res.ExitCode, 1), detail: "exceeded " + r.diskLimit}, true
	case res.ExitCode != 0:
		e := ending{result: poll.ResultFailure, code: res.ExitCode}
		switch {
		case res.OOMKilled:
			e.detail = "out of memory"
		case d.err != nil && d.reason != "":
			// The agent refused the .SRCINFO and the script failed on
			// that answer: say why in the footer too.
			e.detail = d.reason
		default:
			// The step the script says failed, and what makepkg's
			// exit status means.
			e.detail = failureDetail(failedStep(res.Upper), res.ExitCode)
		}
		return e, true
	case d.skip:
		return ending{result: poll.ResultSkipped, detail: d.reason}, true
	case !d.build:
		return ending{result: poll.ResultFailure, code: ExitPublish, err: errors.New("the build ended without asking whether to build")}, true
	}
	return ending{}, false
}

// collect publishes the packages of a successful build (or copies them to
// the output directory).
func (b *Runner) collect(ctx context.Context, job poll.Job, r *ran, log io.Writer, built *Built) ending {
	poll.ReportPhase(ctx, poll.PhasePublishing)
	names, err := b.deliver(ctx, r.res.Upper, job.Repo, log)
	built.Packages = names
	if err != nil {
		if ctx.Err() != nil {
			return stopped
		}
		return ending{result: poll.ResultFailure, code: ExitPublish, err: err}
	}
	what := "built"
	switch {
	case b.opts.server != nil:
		what = "published"
	case b.opts.outDir != "":
		what = "wrote"
	}
	return ending{result: poll.ResultSuccess, detail: what + " " + strings.Join(names, ", ")}
}

// pacmanRepos returns the repositories a build adds to its pacman.conf:
// the job's repository when it has a database (a Vieter repository without
// packages has none and pacman -Sy would fail on its 404), then the extra
// ones of WithRepos. The configured repositories of `vagent run` are in the
// builder image already (package pacman); the script skips a section its
// pacman.conf has.
func (b *Runner) pacmanRepos(ctx context.Context, repo string, log io.Writer) ([]pacman.Repo, error) {
	var repos []pacman.Repo
	if b.opts.server != nil {
		ok, err := b.hasFile(ctx, repo, repo+".db")
		if err != nil {
			return nil, fmt.Errorf("HEAD %s: %w", b.opts.server.RepoURL(repo, b.opts.arch, repo+".db"), err)
		}
		if ok {
			repos = append(repos, pacman.Repo{Name: repo, Servers: []string{b.opts.server.Address() + "/$repo/$arch"}, SigLevel: "Optional"})
		} else {
			fmt.Fprintf(log, "vagent: repository %s has no database for %s yet; it is not added to pacman.conf\n", repo, b.opts.arch)
		}
	}
	return append(repos, b.opts.repos...), nil
}

// forwards are the endpoints an isolated build reaches besides the
// network: those of the Runner's configuration (WithNetwork), the server
// and the repositories of its pacman.conf (the job's repository is on the
// server). The sandbox forwards those that are the host's.
func (b *Runner) forwards(repos []pacman.Repo) []string {
	if b.opts.network != sandbox.NetworkIsolated {
		return nil
	}
	var urls []string
	if b.opts.server != nil {
		urls = append(urls, b.opts.server.Address())
	}
	for _, r := range repos {
		urls = append(urls, r.Servers...)
	}
	return sandbox.ForwardsFor(b.opts.forward, urls...)
}
