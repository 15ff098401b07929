package job

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

// Paths inside the container.
const (
	ctlMount   = "/run/vagent"
	srcMount   = "/run/vagent-src"
	cacheMount = "/var/cache/pacman/pkg"
	outDir     = "build/out" // PKGDEST, relative to the root
)

// containerPath is the PATH of the reference agent's builds.
const containerPath = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/bin/site_perl:/usr/bin/vendor_perl:/usr/bin/core_perl"

// decision is what the agent told the script after reading its .SRCINFO.
type decision struct {
	info   *SrcInfo
	build  bool   // "build" was sent
	reason string // why not, for skip and fail
	skip   bool
	err    error // the .SRCINFO could not be read
}

// run runs one job and returns what happened. It applies no deadline and
// writes no summary line: the caller (poll.RunJob) owns the job's deadline,
// the classification of the outcome and the log's footer. A run stopped by
// ctx returns ResultCancelled with exit code 0; RunJob then tells a timeout
// from a cancellation by ctx's cause.
func (b *Runner) run(ctx context.Context, job poll.Job, srcDir string, log io.Writer) (r *Result) {
	r = &Result{Start: time.Now()}
	l := b.opts.log.WithFields(logrus.Fields{"target": job.TargetID, "repo": job.Repo})

	// stopped ends the build for a done context.
	stopped := func(int) { b.finish(r, poll.ResultCancelled, 0, "", nil) }
	defer func() {
		if p := recover(); p != nil {
			b.finish(r, poll.ResultSetupError, poll.ExitSetupError, "", fmt.Errorf("build panicked: %v", p))
		}
	}()

	if srcDir != "" {
		if fi, err := os.Stat(srcDir); err != nil || !fi.IsDir() {
			if err == nil {
				err = fmt.Errorf("%s is not a directory", srcDir)
			}
			b.finish(r, poll.ResultSetupError, poll.ExitSetupError, "", err)
			return r
		}
	}
	var err error
	if srcDir == "" {
		err = ValidateJob(job, b.opts.localImages)
	} else {
		err = errors.Join(validatePath(job.Path), validateBaseImage(job.BaseImage, b.opts.localImages))
	}
	if err == nil && b.opts.server != nil {
		err = ValidateRepo(job.Repo)
	}
	if err != nil {
		b.finish(r, poll.ResultFailure, ExitInvalidJob, "", err)
		return r
	}

	fmt.Fprintf(log, "+ vagent: builder image for %s\n", strconv.Quote(job.BaseImage))
	rootfs, release, err := b.images.Acquire(ctx, job.BaseImage, log)
	if err != nil {
		if ctx.Err() != nil {
			stopped(poll.ExitSetupError)
			return r
		}
		b.finish(r, poll.ResultSetupError, poll.ExitSetupError, "builder image", err)
		return r
	}
	defer release()

	repos, err := b.pacmanRepos(ctx, job.Repo, log)
	if err != nil {
		if ctx.Err() != nil {
			stopped(poll.ExitSetupError)
			return r
		}
		b.finish(r, poll.ResultSetupError, poll.ExitSetupError, "checking the repository", err)
		return r
	}

	run, err := b.newRun(repos)
	if err != nil {
		b.finish(r, poll.ResultSetupError, poll.ExitSetupError, "preparing the build", err)
		return r
	}
	defer run.remove()
	cache, dropCache, err := b.runCache()
	if err != nil {
		b.finish(r, poll.ResultSetupError, poll.ExitSetupError, "preparing the package cache", err)
		return r
	}
	defer dropCache()

	decided := make(chan decision, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		decided <- b.negotiate(ctx, run, job)
	}()

	spec := sandbox.Spec{
		Lower: rootfs,
		Args:  []string{"/bin/bash", ctlMount + "/build.sh"},
		Env: []string{
			"PATH=" + containerPath, "HOME=/root", "LANG=C.UTF-8",
			"VAGENT_KIND=" + job.Kind, "VAGENT_URL=" + job.URL, "VAGENT_BRANCH=" + job.Branch,
			"VAGENT_PATH=" + job.Path, "VAGENT_JOBS=" + strconv.Itoa(b.opts.jobs),
		},
		Dir:      "/",
		Hostname: "localhost", // resolvable through the host's /etc/hosts (sudo looks it up)
		Mounts: []sandbox.Mount{
			{Source: run.dir, Target: ctlMount, ReadOnly: true},
			{Source: cache, Target: cacheMount}, // owned by the mapped root: no id mapping
		},
		Limits:    b.opts.limits,
		KeepUpper: true,
		Output:    log,
	}
	if srcDir != "" {
		spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: srcDir, Target: srcMount, ReadOnly: true, IDMapped: true})
	}
	l.Debug("build starting")
	poll.ReportPhase(ctx, poll.PhaseBuilding)
	res, err := b.sb.Run(ctx, spec)
	run.closeFIFOs()
	wg.Wait()
	d := <-decided
	r.SrcInfo = d.info
	if err != nil {
		if ctx.Err() != nil {
			stopped(poll.ExitSetupError)
			return r
		}
		b.finish(r, poll.ResultSetupError, poll.ExitSetupError, "starting the build", err)
		return r
	}
	if res.Upper != nil {
		if b.opts.upperHook != nil {
			b.opts.upperHook(res.Upper.Path)
		}
		defer func() {
			if err := res.Upper.Release(); err != nil {
				l.WithError(err).Warn("removing the build's upper directory")
			}
		}()
	}
	switch {
	case res.TimedOut, res.Cancelled, ctx.Err() != nil:
		stopped(res.ExitCode)
		return r
	case res.ExitCode != 0:
		detail := ""
		switch {
		case res.OOMKilled:
			detail = "out of memory"
		case d.err != nil && d.reason != "":
			// The agent refused the .SRCINFO and the script failed on
			// that answer: say why in the footer too.
			detail = d.reason
		}
		b.finish(r, poll.ResultFailure, res.ExitCode, detail, nil)
		return r
	case d.skip:
		b.finish(r, poll.ResultSkipped, 0, d.reason, nil)
		return r
	case !d.build:
		b.finish(r, poll.ResultFailure, ExitPublish, "", errors.New("the build ended without asking whether to build"))
		return r
	}

	poll.ReportPhase(ctx, poll.PhasePublishing)
	names, err := b.deliver(ctx, res.Upper, job.Repo, log)
	r.Packages = names
	if err != nil {
		if ctx.Err() != nil {
			stopped(ExitPublish)
			return r
		}
		b.finish(r, poll.ResultFailure, ExitPublish, "", err)
		return r
	}
	what := "built"
	switch {
	case b.opts.server != nil:
		what = "published"
	case b.opts.outDir != "":
		what = "wrote"
	}
	b.finish(r, poll.ResultSuccess, 0, what+" "+strings.Join(names, ", "), nil)
	return r
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

// runDir is the control directory of one build, mounted read-only on
// /run/vagent. It is owned by host root, which is outside the container's
// id range: the build cannot change what is in it.
type runDir struct {
	dir       string
	srcinfo   *os.File // FIFO, read by the agent
	decision  *os.File // FIFO, written by the agent
	closeOnce sync.Once
}

func (b *Runner) newRun(repos []pacman.Repo) (_ *runDir, retErr error) {
	dir, err := os.MkdirTemp(b.runsDir(), "run-")
	if err != nil {
		return nil, err
	}
	run := &runDir{dir: dir}
	defer func() {
		if retErr != nil {
			run.remove()
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for _, name := range []string{"build.sh", "pacman"} {
		data, err := scripts.ReadFile("script/" + name)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "repos.d"), 0o755); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, r := range repos {
		if seen[r.Name] {
			continue // each repository once
		}
		seen[r.Name] = true
		if err := os.WriteFile(filepath.Join(dir, "repos.d", fmt.Sprintf("%02d.conf", i)), []byte(r.Section()), 0o644); err != nil {
			return nil, err
		}
	}
	for _, name := range []string{"srcinfo", "decision"} {
		p := filepath.Join(dir, name)
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return nil, fmt.Errorf("mkfifo %s: %w", p, err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			return nil, err
		}
		// O_RDWR never blocks and keeps the FIFO open from both ends, so
		// the script's open does not block either.
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		if name == "srcinfo" {
			run.srcinfo = f
		} else {
			run.decision = f
		}
	}
	return run, nil
}

// closeFIFOs ends the agent's side of the FIFOs, which also unblocks a
// read or write in progress.
func (r *runDir) closeFIFOs() {
	r.closeOnce.Do(func() {
		if r.srcinfo != nil {
			r.srcinfo.Close()
		}
		if r.decision != nil {
			r.decision.Close()
		}
	})
}

func (r *runDir) remove() {
	r.closeFIFOs()
	_ = os.RemoveAll(r.dir)
}

// maxSrcInfoHeader bounds the length line of the srcinfo FIFO.
const maxSrcInfoHeader = 64

// negotiate reads the .SRCINFO the script sends, decides whether to
// build, and answers. It returns when it answered or the FIFOs were closed.
func (b *Runner) negotiate(ctx context.Context, run *runDir, job poll.Job) decision {
	// The FIFO is writable by the build at any time: every read from it is
	// bounded. The header is a decimal length on one line, read within
	// the reader's buffer (ReadSlice fails with ErrBufferFull past it).
	br := bufio.NewReaderSize(run.srcinfo, maxSrcInfoHeader)
	line, err := br.ReadSlice('\n')
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
		return decision{err: err}
	}
	header := strings.TrimSpace(string(line))
	var d decision
	size, convErr := strconv.Atoi(header)
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		d = decision{err: fmt.Errorf("%w: length line longer than %d bytes", ErrSrcInfo, maxSrcInfoHeader), reason: "unreadable .SRCINFO"}
	case convErr != nil || size < 0:
		d = decision{err: fmt.Errorf("%w: bad length %q", ErrSrcInfo, header), reason: "unreadable .SRCINFO"}
	case size > MaxSrcInfo:
		d = decision{err: fmt.Errorf("%w: %d bytes", ErrSrcInfo, size), reason: ".SRCINFO too large"}
	default:
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); err != nil {
			return decision{err: err}
		}
		d.info, d.err = ParseSrcInfo(strings.NewReader(string(data)))
		if d.err != nil {
			d.reason = d.err.Error()
		}
	}
	if d.err == nil {
		d.build, d.skip, d.reason = b.decide(ctx, job, d.info)
	}
	answer := "fail " + oneLine(d.reason)
	switch {
	case d.skip:
		answer = "skip " + oneLine(d.reason)
	case d.build:
		answer = "build"
	}
	if _, err := run.decision.Write([]byte(answer + "\n")); err != nil {
		d.build, d.skip = false, false
	}
	if d.err != nil {
		// Keep draining (through a fixed buffer: bounded) so that a
		// script writing more cannot block.
		_, _ = io.Copy(io.Discard, br)
	}
	return d
}

// decide tells whether to build: always without a server or when forced;
// otherwise unless every package of the PKGBUILD is already in the
// repository at this version.
func (b *Runner) decide(ctx context.Context, job poll.Job, info *SrcInfo) (build, skip bool, reason string) {
	if b.opts.server == nil || job.Force {
		return true, false, ""
	}
	version := info.FullVersion()
	for _, name := range info.Names {
		ok, err := b.hasVersion(ctx, job.Repo, name, version)
		if err != nil {
			// Cannot tell: building again is safe (the server keeps the
			// newest version).
			b.opts.log.WithError(err).Warn("skip check failed; building")
			return true, false, ""
		}
		if !ok {
			return true, false, ""
		}
	}
	return false, true, fmt.Sprintf("%s %s already in repository %s", strings.Join(info.Names, ", "), version, job.Repo)
}
