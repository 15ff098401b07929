package job

import (
	"context"
	"embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/lockfile"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

// The build script, git's credential helper and the package check,
// constants of the binary.
//
//go:embed script/build.sh script/git-credential script/checkpkg
var scripts embed.FS

// Images lends builder root filesystems for base images.
type Images interface {
	// Acquire returns the rootfs directory of a ready builder for
	// baseImage (setup output goes to log) and a function that ends the
	// loan.
	Acquire(ctx context.Context, baseImage string, log io.Writer) (rootfs string, release func(), err error)
}

// ImagesFunc adapts a function to Images.
type ImagesFunc func(ctx context.Context, baseImage string, log io.Writer) (string, func(), error)

// Acquire calls f.
func (f ImagesFunc) Acquire(ctx context.Context, baseImage string, log io.Writer) (string, func(), error) {
	return f(ctx, baseImage, log)
}

// BuilderImages returns the Images of a builder.Manager. It reports the
// preparation's stages as the job's phases (poll.PhasePulling,
// poll.PhasePreparing) and the digests of the base image and the builder
// as fields of the log's header (poll.ReportHeader).
func BuilderImages(m *builder.Manager) Images {
	return ImagesFunc(func(ctx context.Context, base string, log io.Writer) (string, func(), error) {
		var out io.Writer
		if log != nil {
			out = stageLog{log, poll.ProgressFrom(ctx)}
		}
		l, err := m.Acquire(ctx, base, out)
		if err != nil {
			return "", nil, err
		}
		poll.ReportHeader(ctx, "base image digest", l.BaseDigest.String())
		poll.ReportHeader(ctx, "builder digest", l.Digest.String())
		poll.ReportHeader(ctx, "builder prepared", l.Created.UTC().Format(time.RFC3339))
		return l.Rootfs, l.Release, nil
	})
}

// stageLog is a job's log that turns a builder preparation's stages into
// the job's phases.
type stageLog struct {
	io.Writer
	progress poll.Progress
}

func (s stageLog) Stage(st builder.Stage) {
	switch st {
	case builder.StagePulling:
		s.progress.Phase(poll.PhasePulling)
	case builder.StagePreparing:
		s.progress.Phase(poll.PhasePreparing)
	}
}

// Sandbox runs a build's process tree: *sandbox.Manager implements it;
// tests use a fake that plays the build script's part without containers.
type Sandbox interface {
	// Run runs spec to completion (see sandbox.Manager.Run).
	Run(ctx context.Context, spec sandbox.Spec) (*sandbox.Result, error)
	// IDRange returns the host ids container ids map to (see
	// sandbox.Manager.IDRange).
	IDRange() (uid, gid, size uint32)
}

var _ Sandbox = (*sandbox.Manager)(nil)

// Runner runs jobs. It is safe for concurrent use.
type Runner struct {
	sb     Sandbox
	images Images
	dir    string
	opts   *options
	// rootUID and rootGID are the host ids of container root, the owner
	// of the package cache tree.
	rootUID, rootGID int
	idSize           uint32
}

var _ poll.Executor = (*Runner)(nil)

// Exit codes the build reports when the script did not give one.
const (
	// ExitInvalidJob is reported for a job refused before anything ran.
	ExitInvalidJob = 2
	// ExitPublish is reported when the build succeeded but its packages
	// could not be published (or copied out), or there were none.
	ExitPublish = 1
)

// New returns a Runner that runs builds with sb on the builders of
// images, keeping its state (the package caches, run control
// directories) in dir. dir is made private to root (0700): when the
// container's init cannot reach the source of a bind mount, libcontainer
// opens it on the host side, as root, so no other user (the mapped root
// included) has to reach anything below dir. A nil sb (a nil
// *sandbox.Manager too) or images is refused with ErrBadConfig.
func New(sb Sandbox, images Images, dir string, opts ...Option) (*Runner, error) {
	if m, ok := sb.(*sandbox.Manager); sb == nil || (ok && m == nil) || images == nil {
		return nil, fmt.Errorf("%w: nil sandbox or images", ErrBadConfig)
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if o.offline && o.network != sandbox.NetworkIsolated {
		return nil, fmt.Errorf("%w: an offline build() needs the isolated network, not %s", ErrBadConfig, o.network)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(dir, ",:\\") {
		return nil, fmt.Errorf("%w: directory %q has ',', ':' or '\\'", ErrBadConfig, dir)
	}
	uid, gid, size := sb.IDRange()
	b := &Runner{sb: sb, images: images, dir: dir, opts: o, rootUID: int(uid), rootGID: int(gid), idSize: size}
	if err := b.prepareDir(); err != nil {
		return nil, err
	}
	return b, nil
}

// prepareDir creates the cache and run directories and removes the runs
// dead processes left behind.
func (b *Runner) prepareDir() error {
	for _, d := range []string{b.dir, b.runsDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return err
		}
	}
	if err := b.prepareCache(); err != nil {
		return err
	}
	// Each run directory is locked by the process that made it: what
	// dead processes left goes, the runs of live ones beside this (an
	// agent and `vagent build` on one data dir) stay.
	if _, err := lockfile.RemoveStale(b.runsDir()); err != nil {
		return fmt.Errorf("removing runs of an earlier process: %w", err)
	}
	return nil
}

// cacheDir is the package cache directory (see cache_linux.go), "" when
// builds have private ones.
func (b *Runner) cacheDir() string {
	if b.opts.cacheSet {
		return b.opts.cacheDir
	}
	return filepath.Join(b.dir, "pacman-cache")
}

func (b *Runner) runsDir() string { return filepath.Join(b.dir, "runs") }

// Built is what one build produced, besides how it ended (poll.Outcome).
type Built struct {
	// SrcInfo is what the build's .SRCINFO said, when it got that far.
	SrcInfo *SrcInfo
	// Packages are the file names of the packages published (and
	// confirmed by the server) or copied to the output directory.
	Packages []string

	// kept is the tree of a build WithInspect selected (Inspect,
	// Release).
	kept *keptBuild
}

// Execute runs a job from the poll loop: it implements poll.Executor (see
// Run).
func (b *Runner) Execute(ctx context.Context, job poll.Job, log io.Writer) (poll.Outcome, error) {
	_, out, err := b.Run(ctx, job, "", log)
	return out, err
}

// Run runs one job and returns what it produced and how it ended. With
// srcDir "" the sources are the job's (kind, url, branch); otherwise the
// PKGBUILD is in the local directory srcDir (mounted read-only and copied
// into the container; srcDir is not changed) and the job gives the base
// image and path only — `vagent build`.
//
// Run is a job's work, not its lifecycle: it applies no deadline, recovers
// no panic and writes no footer. The caller runs it through poll.RunJob
// (the agent's slots, `vagent build`), which owns the deadline, the
// classification of the outcome and the log's one footer line. A build
// stopped by ctx reports poll.ResultCancelled with exit code 0; RunJob
// tells a timeout from a cancellation by ctx's cause. An error (wrapping
// poll.ErrSetup) means the build's environment could not be prepared.
func (b *Runner) Run(ctx context.Context, job poll.Job, srcDir string, log io.Writer) (*Built, poll.Outcome, error) {
	start := time.Now()
	built := &Built{}
	if srcDir != "" {
		abs, err := filepath.Abs(srcDir)
		if err == nil {
			srcDir = abs
		}
		job.Kind, job.URL, job.Branch = "dir", "file://"+srcDir, ""
	}
	e := b.run(ctx, job, srcDir, log, built)
	out := poll.Outcome{ExitCode: e.code, Result: e.result, Start: start, End: time.Now(), Detail: e.detail}
	if e.setup {
		return built, out, setupError{e.err}
	}
	out.Err = e.err
	return built, out, nil
}

// ending is how a build ended: each phase of run ends the build with one.
type ending struct {
	result poll.Result
	code   int
	detail string // the footer's parenthesis, e.g. "published a, b"
	err    error
	// setup marks an environment that could not be prepared: Run returns
	// err as its error (wrapping poll.ErrSetup).
	setup bool
}

// setupError is the error of a build whose environment could not be
// prepared: errors.Is(err, poll.ErrSetup) holds, and its message is the
// cause's alone (the footer reads "builder image: <cause>").
type setupError struct{ err error }

func (e setupError) Error() string   { return e.err.Error() }
func (e setupError) Unwrap() []error { return []error{poll.ErrSetup, e.err} }

// stopped ends a build whose context is done; poll.RunJob says why.
var stopped = ending{result: poll.ResultCancelled}

// setupFailed ends a build whose environment could not be prepared at
// step what (the footer's summary), unless ctx ended it.
func setupFailed(ctx context.Context, what string, err error) ending {
	if ctx.Err() != nil {
		return stopped
	}
	return ending{result: poll.ResultSetupError, code: poll.ExitSetupError, detail: what, err: err, setup: true}
}

// Shell is an interactive shell in a kept build (Built.Inspect).
type Shell struct {
	// Term is the shell's TERM (default "xterm").
	Term string
	// Attach connects the user's terminal with the shell's, whose master
	// side it gets (see sandbox.Spec.Terminal): it must return once a
	// read of the master fails.
	Attach func(master *os.File)
}
