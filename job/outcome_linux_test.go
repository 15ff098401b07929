package job_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
	"github.com/vieter-v/vagent/vieter"
)

// fakeImages lends one directory as the builder of every base image, or
// fails with err; with block set it prepares until its context ends and
// calls onBlock first.
type fakeImages struct {
	rootfs   string
	err      error
	block    bool
	onBlock  func()
	acquired atomic.Int32
	loans    atomic.Int32 // acquired and not released
}

func (im *fakeImages) Acquire(ctx context.Context, base string, log io.Writer) (string, func(), error) {
	fmt.Fprintf(log, "fake: builder of %s\n", base)
	if im.err != nil {
		return "", nil, im.err
	}
	if im.block {
		fmt.Fprintln(log, "fake: preparing the builder until the context ends")
		im.onBlock()
		<-ctx.Done()
		return "", nil, context.Cause(ctx)
	}
	im.acquired.Add(1)
	im.loans.Add(1)
	return im.rootfs, func() { im.loans.Add(-1) }, nil
}

// A split package at version 1.0-1, as build.sh sends its .SRCINFO and
// makepkg leaves its packages.
const splitSrcInfo = "pkgbase = split\n\tpkgver = 1.0\n\tpkgrel = 1\n\tarch = any\n\npkgname = split-a\n\npkgname = split-b\n"

var (
	splitA       = vieterserver.PkgInfo{Name: "split-a", Base: "split", Version: "1.0-1", Arch: "any", Desc: "seeded"}
	splitB       = vieterserver.PkgInfo{Name: "split-b", Base: "split", Version: "1.0-1", Arch: "any", Desc: "seeded"}
	splitBuild   = script{srcinfo: lengthPrefixed(splitSrcInfo), packages: []vieterserver.PkgInfo{splitA, splitB}}
	splitFiles   = "split-a-1.0-1-any.pkg.tar.zst, split-b-1.0-1-any.pkg.tar.zst"
	splitHeld    = []string{"split-a 1.0-1", "split-b 1.0-1"}
	testLimits   = sandbox.Limits{Memory: 512 << 20, Pids: 256, CPUQuota: 1.5, Disk: 64 << 20}
	outcomeJob   = poll.Job{TargetID: 7, Kind: "git", URL: "https://example.org/split.git", Branch: "x;touch${IFS}/pwned", Path: "pkgs/split", Repo: "bur", BaseImage: "archlinux:base-devel"}
	errNoSpace   = errors.New("creating container: no space left on device")
	errNoBuilder = errors.New("registry unreachable")
)

// withScript returns s changed by f.
func withScript(s script, f func(*script)) script {
	f(&s)
	return s
}

// outcomeRow is one way a job can end.
type outcomeRow struct {
	name     string
	job      func(*poll.Job)
	script   script
	seed     []vieterserver.PkgInfo // in the repository before the build
	imageErr error                  // Images.Acquire fails with it
	imageBlk bool                   // Images.Acquire blocks until the context ends
	faults   *vieterserver.FaultConfig
	cancel   bool         // the caller cancels (poll.ErrShutdown) once the build or the builder blocks
	opts     []job.Option // more options of the Runner
	breakDir string       // a directory of the Runner's, replaced by a file after New

	status poll.Result
	code   int
	footer string        // exact prefix of the log's last line
	log    []string      // the log has these too
	ran    bool          // the sandbox was called
	leased bool          // a builder was leased (implied by ran)
	held   []string      // "name version" in the repository afterwards
	posts  int           // publish requests the server got
	took   time.Duration // the build ran at least this long
}

// outcome is how an entry point reported a job.
type outcome struct {
	status   poll.Result
	code     int
	reason   string
	took     time.Duration
	packages []string // Run's Built.Packages
}

// entryPoint runs a job as one of the Runner's callers does.
type entryPoint struct {
	name string
	run  func(ctx context.Context, b *job.Runner, j poll.Job, log io.Writer) outcome
}

var entryPoints = []entryPoint{
	// `vagent build`: poll.RunJob around Runner.Run, which reports what
	// the build produced.
	{"Run", func(ctx context.Context, b *job.Runner, j poll.Job, log io.Writer) outcome {
		r := build(ctx, b, j, "", poll.DefaultLogLimit, log)
		return outcome{r.Result, r.ExitCode, r.Reason, r.End.Sub(r.Start), r.Packages}
	}},
	// The agent's slot: poll.RunJob with the Runner as its Executor.
	{"Execute", func(ctx context.Context, b *job.Runner, j poll.Job, log io.Writer) outcome {
		r := poll.RunJob(ctx, b, j, poll.DefaultTimeout, poll.DefaultLogLimit, log)
		return outcome{r.Result, r.ExitCode, r.Reason, r.End.Sub(r.Start), nil}
	}},
}

// TestOutcomeMatrix runs a job through the Runner's entry points to every
// outcome, with a fake sandbox in place of containers and the test server
// as the repository: the status and exit code, the log's footer, what the
// server holds afterwards, and the Spec the sandbox got.
func TestOutcomeMatrix(t *testing.T) {
	t.Parallel()
	refusing := &vieterserver.FaultConfig{Rate: 1, Seed: 1, Kinds: []vieterserver.Fault{vieterserver.Fault5xx}, Routes: []string{vieterserver.RoutePublish}}
	rows := []outcomeRow{{
		name: "published", script: splitBuild,
		status: poll.ResultSuccess, code: 0,
		footer: "vagent: success (published " + splitFiles + "); exit code 0; took ",
		log:    []string{"+ vagent: publish split-a-1.0-1-any.pkg.tar.zst to ", "vagent: split-b 1.0-1 confirmed in bur (by the server's answer; 1 attempt(s))"},
		ran:    true, held: splitHeld, posts: 2,
	}, {
		name: "already in the repository", script: splitBuild, seed: []vieterserver.PkgInfo{splitA, splitB},
		status: poll.ResultSkipped, code: 0,
		footer: "vagent: skipped (split-a, split-b 1.0-1 already in repository bur); exit code 0; took ",
		log:    []string{"vagent: skipping the build: split-a, split-b 1.0-1 already in repository bur\n"},
		ran:    true, held: splitHeld, posts: 0,
	}, {
		name: "one of two in the repository", script: splitBuild, seed: []vieterserver.PkgInfo{splitA},
		status: poll.ResultSuccess, code: 0,
		footer: "vagent: success (published " + splitFiles + "); exit code 0; took ",
		ran:    true, held: splitHeld, posts: 2,
	}, {
		name: "forced", job: func(j *poll.Job) { j.Force = true }, script: splitBuild, seed: []vieterserver.PkgInfo{splitA, splitB},
		status: poll.ResultSuccess, code: 0,
		footer: "vagent: success (published " + splitFiles + "); exit code 0; took ",
		ran:    true, held: splitHeld, posts: 2,
	}, {
		name: "build failed", script: withScript(splitBuild, func(s *script) { s.exitCode = 2 }),
		status: poll.ResultFailure, code: 2,
		footer: "vagent: failure; exit code 2; took ",
		log:    []string{"==> ERROR: A failure occurred in build().\n"},
		ran:    true, posts: 0,
	}, {
		name: "out of memory", script: withScript(splitBuild, func(s *script) { s.exitCode, s.oom = 137, true }),
		status: poll.ResultFailure, code: 137,
		footer: "vagent: failure (out of memory); exit code 137; took ",
		ran:    true, posts: 0,
	}, {
		name: "over the disk limit", script: withScript(splitBuild, func(s *script) { s.exitCode, s.disk = 137, true }),
		status: poll.ResultFailure, code: 137,
		footer: "vagent: failure (exceeded its disk limit of 67108864 bytes); exit code 137; took ",
		log:    []string{"vagent: the build wrote more than its disk limit of 67108864 bytes (build_limits.disk): stopped\n"},
		ran:    true, posts: 0,
	}, {
		// The build ended, then the last measurement found it over: its
		// packages are not published.
		name: "over the disk limit at the end", script: withScript(splitBuild, func(s *script) { s.disk = true }),
		status: poll.ResultFailure, code: 1,
		footer: "vagent: failure (exceeded its disk limit of 67108864 bytes); exit code 1; took ",
		ran:    true, posts: 0,
	}, {
		name: "timeout", job: func(j *poll.Job) { j.Timeout = 1 }, script: withScript(splitBuild, func(s *script) { s.block = true }),
		status: poll.ResultTimeout, code: poll.ExitTimeout,
		footer: fmt.Sprintf("vagent: timeout after 1 s; exit code %d; took ", poll.ExitTimeout),
		log:    []string{"building until the job's deadline\n"},
		ran:    true, posts: 0, took: time.Second,
	}, {
		name: "cancelled", script: withScript(splitBuild, func(s *script) { s.block = true }), cancel: true,
		status: poll.ResultCancelled, code: poll.ExitCancelled,
		footer: fmt.Sprintf("vagent: cancelled (%v); the job goes back to the server; exit code %d; took ", poll.ErrShutdown, poll.ExitCancelled),
		ran:    true, posts: 0,
	}, {
		name: "ended without asking", script: script{},
		status: poll.ResultFailure, code: job.ExitPublish,
		footer: "vagent: failure: the build ended without asking whether to build; exit code 1; took ",
		log:    []string{"fake: the script ends without sending a .SRCINFO\n"},
		ran:    true,
	}, {
		name: "malformed srcinfo header", script: script{srcinfo: []byte("12x\n" + splitSrcInfo)},
		status: poll.ResultFailure, code: 1,
		footer: "vagent: failure (unreadable .SRCINFO); exit code 1; took ",
		log:    []string{"vagent: unreadable .SRCINFO\n"},
		ran:    true,
	}, {
		name: "garbage srcinfo", script: script{srcinfo: bytes.Repeat([]byte{0xff, 0, 'A'}, 100)},
		status: poll.ResultFailure, code: 1,
		footer: "vagent: failure (unreadable .SRCINFO); exit code 1; took ",
		log:    []string{"vagent: unreadable .SRCINFO\n"},
		ran:    true,
	}, {
		name: "srcinfo too large", script: script{srcinfo: fmt.Appendf(nil, "%d\npkgbase = split\n", job.MaxSrcInfo+1)},
		status: poll.ResultFailure, code: 1,
		footer: "vagent: failure (.SRCINFO too large); exit code 1; took ",
		log:    []string{"vagent: .SRCINFO too large\n"},
		ran:    true,
	}, {
		// A length line without its newline, or a .SRCINFO shorter than
		// its length: the agent answers within its bound, not at the
		// job's timeout.
		name: "length line without newline", script: script{srcinfo: []byte("12")}, opts: []job.Option{job.WithSrcInfoWithin(300 * time.Millisecond)},
		status: poll.ResultFailure, code: 1,
		footer: "vagent: failure (incomplete .SRCINFO after 300ms); exit code 1; took ",
		log:    []string{"vagent: incomplete .SRCINFO after 300ms\n"},
		ran:    true,
	}, {
		name: "srcinfo shorter than its length", script: script{srcinfo: []byte("100\npkgbase = split\n")}, opts: []job.Option{job.WithSrcInfoWithin(300 * time.Millisecond)},
		status: poll.ResultFailure, code: 1,
		footer: "vagent: failure (incomplete .SRCINFO after 300ms); exit code 1; took ",
		log:    []string{"vagent: incomplete .SRCINFO after 300ms\n"},
		ran:    true,
	}, {
		name: "unparsable srcinfo", script: script{srcinfo: lengthPrefixed("pkgbase = Split Package\n\tpkgver = 1.0\n")},
		status: poll.ResultFailure, code: 1,
		footer: `vagent: failure (invalid .SRCINFO: line 1: pkgbase "Split Package"); exit code 1; took `,
		log:    []string{`vagent: invalid .SRCINFO: line 1: pkgbase "Split Package"` + "\n"},
		ran:    true,
	}, {
		name: "builder image", script: splitBuild, imageErr: errNoBuilder,
		status: poll.ResultSetupError, code: poll.ExitSetupError,
		footer: fmt.Sprintf("vagent: builder image: %v; exit code %d; took ", errNoBuilder, poll.ExitSetupError),
	}, {
		name: "sandbox error", script: script{runErr: errNoSpace},
		status: poll.ResultSetupError, code: poll.ExitSetupError,
		footer: fmt.Sprintf("vagent: starting the build: %v; exit code %d; took ", errNoSpace, poll.ExitSetupError),
		ran:    true,
	}, {
		name: "publish refused", script: splitBuild, faults: refusing,
		status: poll.ResultFailure, code: job.ExitPublish,
		footer: "vagent: failure: publishing failed: split-a-1.0-1-any.pkg.tar.zst: ",
		log:    []string{"vagent: split-a 1.0-1 NOT confirmed in bur after 3 attempt(s): "},
		ran:    true, posts: 3,
	}, {
		name: "no packages", script: withScript(splitBuild, func(s *script) { s.packages = nil }),
		status: poll.ResultFailure, code: job.ExitPublish,
		footer: "vagent: failure: build produced no packages in /build/out; exit code 1; took ",
		ran:    true,
	}, {
		name: "cancelled while preparing the builder", script: splitBuild, imageBlk: true, cancel: true,
		status: poll.ResultCancelled, code: poll.ExitCancelled,
		footer: fmt.Sprintf("vagent: cancelled (%v); the job goes back to the server; exit code %d; took ", poll.ErrShutdown, poll.ExitCancelled),
		log:    []string{"fake: preparing the builder until the context ends\n"},
	}, {
		name: "repository unreachable", script: splitBuild, faults: &vieterserver.FaultConfig{Rate: 1, Seed: 1, Kinds: []vieterserver.Fault{vieterserver.Fault5xx}, Routes: []string{vieterserver.RouteRepoFile}},
		status: poll.ResultSetupError, code: poll.ExitSetupError,
		footer: "vagent: checking the repository: HEAD ",
		leased: true,
	}, {
		name: "control directory unusable", script: splitBuild, breakDir: "runs",
		status: poll.ResultSetupError, code: poll.ExitSetupError,
		footer: "vagent: preparing the build: ",
		leased: true,
	}, {
		name: "package cache unusable", script: splitBuild, breakDir: "pacman-cache",
		status: poll.ResultSetupError, code: poll.ExitSetupError,
		footer: "vagent: preparing the package cache: ",
		leased: true,
	}, {
		name: "sandbox panicked", script: script{panics: true},
		status: poll.ResultSetupError, code: poll.ExitSetupError,
		footer: "vagent: setup-error: executor panicked: fake sandbox: panic in Run; exit code 125; took ",
		ran:    true,
	}, {
		name: "invalid job", job: func(j *poll.Job) { j.Repo = "../etc" }, script: splitBuild,
		status: poll.ResultFailure, code: job.ExitInvalidJob,
		footer: `vagent: failure: invalid job: repository name "../etc"; exit code 2; took `,
	}}
	for _, row := range rows {
		for _, ep := range entryPoints {
			t.Run(row.name+"/"+ep.name, func(t *testing.T) {
				t.Parallel()
				testOutcome(t, row, ep)
			})
		}
	}
}

func testOutcome(t *testing.T, row outcomeRow, ep entryPoint) {
	const key = "outcome-matrix-key"
	opts := []vieterserver.Option{vieterserver.WithAPIKey(key)}
	if row.faults != nil {
		opts = append(opts, vieterserver.WithFaults(*row.faults))
	}
	srv, ts := vieterserver.NewTest(t, opts...)
	for _, p := range row.seed {
		data, err := vieterserver.MakePackage(p, nil, vieterserver.Zstd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Publish("bur", data); err != nil {
			t.Fatal(err)
		}
	}
	client, err := vieter.NewClient(ts.URL, key)
	if err != nil {
		t.Fatal(err)
	}
	sb := newFakeSandbox(t, row.script)
	images := &fakeImages{rootfs: t.TempDir(), err: row.imageErr, block: row.imageBlk}
	dir := filepath.Join(t.TempDir(), "build")
	jopts := append([]job.Option{job.WithServer(client), job.WithArch("x86_64"),
		job.WithRetry(3, time.Millisecond), job.WithLimits(testLimits), job.WithJobs(3)}, row.opts...)
	b, err := job.New(sb, images, dir, jopts...)
	if err != nil {
		t.Fatal(err)
	}
	if row.breakDir != "" {
		// What New prepared becomes unusable before the build.
		p := filepath.Join(dir, row.breakDir)
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	if row.cancel {
		sb.onBlock = func() { cancel(poll.ErrShutdown) }
		images.onBlock = sb.onBlock
	}
	j := outcomeJob
	if row.job != nil {
		row.job(&j)
	}
	postsBefore := srv.Requests(vieterserver.RoutePublish)

	var log sandboxtest.Buffer
	begin := time.Now()
	out := ep.run(ctx, b, j, &log)
	wall := time.Since(begin)

	text := log.String()
	if out.status != row.status || out.code != row.code {
		t.Errorf("status %s exit %d (%s), want %s exit %d", out.status, out.code, out.reason, row.status, row.code)
	}
	last := lastLine(text)
	if !strings.HasPrefix(last, row.footer) {
		t.Errorf("footer\n%q\nwant prefix\n%q", last, row.footer)
	}
	if want := fmt.Sprintf("vagent: %s; exit code %d; took ", out.reason, out.code); !strings.HasPrefix(last, want) {
		t.Errorf("footer %q does not start with the reported reason and code: %q", last, want)
	}
	for _, want := range row.log {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	// The reported time starts with the Runner's run, a little after the
	// job's deadline was set: the caller's clock tells whether the build
	// ran until the deadline.
	if wall < row.took || out.took > wall {
		t.Errorf("the build took %s (reported %s), want at least %s", wall, out.took, row.took)
	}
	var held []string
	for _, p := range srv.Packages("bur", "x86_64") {
		held = append(held, p.Info.Name+" "+p.Info.Version)
	}
	if !slices.Equal(held, row.held) {
		t.Errorf("the repository holds %q, want %q", held, row.held)
	}
	if posts := srv.Requests(vieterserver.RoutePublish) - postsBefore; posts != row.posts {
		t.Errorf("%d publish requests, want %d", posts, row.posts)
	}
	if ep.name == "Run" {
		want := ""
		if row.status == poll.ResultSuccess {
			want = splitFiles
		}
		if got := strings.Join(out.packages, ", "); got != want {
			t.Errorf("Result.Packages %q, want %q", got, want)
		}
	}

	specs := sb.Specs()
	switch {
	case !row.ran && len(specs) != 0:
		t.Errorf("the sandbox ran %d times, want never", len(specs))
	case row.ran && len(specs) != 1:
		t.Errorf("the sandbox ran %d times, want once", len(specs))
	case row.ran:
		checkSpec(t, specs[0], j, images.rootfs, ts.URL)
	}
	wantLoans := int32(0) // a builder is only acquired for a build that gets that far
	if row.ran || row.leased {
		wantLoans = 1
	}
	if images.acquired.Load() != wantLoans || images.loans.Load() != 0 {
		t.Errorf("%d builder loans, %d not returned; want %d, 0", images.acquired.Load(), images.loans.Load(), wantLoans)
	}
	for _, u := range sb.Uppers() {
		if _, err := os.Lstat(u); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("upper %s not released: %v", u, err)
		}
	}
	// Control directories and private caches go with the build, on every
	// path: the Runner's runs directory is empty again.
	if row.breakDir != "runs" {
		if left, err := os.ReadDir(filepath.Join(dir, "runs")); err != nil || len(left) != 0 {
			t.Errorf("runs directory after the build: %v %v", left, err)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", text)
	}
}

// checkSpec checks the Spec of a build of j on the builder rootfs: the job's
// values as single environment variables, the control directory read-only
// (and gone after the build), the cache writable, the Runner's limits, the
// upper kept for the packages, the isolated network reaching the server.
func checkSpec(t *testing.T, s sandbox.Spec, j poll.Job, rootfs, server string) {
	t.Helper()
	if s.Lower != rootfs || !slices.Equal(s.Args, []string{"/bin/bash", "/run/vagent/build.sh"}) || !s.KeepUpper || s.ReadOnly || s.Output == nil {
		t.Errorf("spec lower %s args %q keep upper %v read-only %v output %v", s.Lower, s.Args, s.KeepUpper, s.ReadOnly, s.Output)
	}
	var vagentEnv []string
	for _, e := range s.Env {
		if strings.HasPrefix(e, "VAGENT_") {
			vagentEnv = append(vagentEnv, e)
		}
	}
	want := []string{"VAGENT_KIND=" + j.Kind, "VAGENT_URL=" + j.URL, "VAGENT_BRANCH=" + j.Branch, "VAGENT_PATH=" + j.Path, "VAGENT_JOBS=3", "VAGENT_OFFLINE=0", "VAGENT_CHECK=false"}
	if !slices.Equal(vagentEnv, want) {
		t.Errorf("job environment %q, want %q", vagentEnv, want)
	}
	// The job's URL is the server's, untrusted: never forwarded.
	if ep, _ := sandbox.URLEndpoint(server); s.Network != sandbox.NetworkIsolated || !slices.Equal(s.Forward, []string{ep}) || s.NetworkControl != nil {
		t.Errorf("network %s, forwards %q, control %v; want isolated, the server's %s only, none", s.Network, s.Forward, s.NetworkControl, ep)
	}
	if len(s.Mounts) != 2 {
		t.Fatalf("mounts %+v, want the control directory and the cache", s.Mounts)
	}
	ctl, cache := s.Mounts[0], s.Mounts[1]
	if ctl.Target != "/run/vagent" || !ctl.ReadOnly || ctl.IDMapped {
		t.Errorf("control mount %+v, want read-only on /run/vagent without id mapping", ctl)
	}
	if cache.Target != "/var/cache/pacman/pkg" || cache.ReadOnly || cache.IDMapped {
		t.Errorf("cache mount %+v, want writable on /var/cache/pacman/pkg without id mapping", cache)
	}
	if _, err := os.Lstat(ctl.Source); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control directory %s still there after the build: %v", ctl.Source, err)
	}
	if s.Limits == nil || *s.Limits != testLimits {
		t.Errorf("limits %+v, want %+v", s.Limits, testLimits)
	}
}

// TestNewRefusesNilSandbox: a nil Sandbox, a nil *sandbox.Manager in it,
// or nil Images is refused; the fake is accepted.
func TestNewRefusesNilSandbox(t *testing.T) {
	images := &fakeImages{rootfs: t.TempDir()}
	for _, tc := range []struct {
		name   string
		sb     job.Sandbox
		images job.Images
		ok     bool
	}{
		{"nil sandbox", nil, images, false},
		{"nil manager", (*sandbox.Manager)(nil), images, false},
		{"nil images", newFakeSandbox(t, script{}), nil, false},
		{"fake", newFakeSandbox(t, script{}), images, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := job.New(tc.sb, tc.images, filepath.Join(t.TempDir(), "build"))
			if tc.ok && (err != nil || b == nil) {
				t.Errorf("New: %v", err)
			}
			if !tc.ok && !errors.Is(err, job.ErrBadConfig) {
				t.Errorf("New = %v, want ErrBadConfig", err)
			}
		})
	}
}

// TestOfflineAnswer: with WithOfflineBuild the agent answers "build" only
// once the build's network is cut (the build is told, VAGENT_OFFLINE=1); a
// build it skips keeps its network; an offline build needs the isolated
// network.
func TestOfflineAnswer(t *testing.T) {
	t.Parallel()
	const key = "offline-key"
	srv, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey(key))
	client, err := vieter.NewClient(ts.URL, key)
	if err != nil {
		t.Fatal(err)
	}
	sb := newFakeSandbox(t, splitBuild)
	images := &fakeImages{rootfs: t.TempDir()}
	b, err := job.New(sb, images, filepath.Join(t.TempDir(), "build"), job.WithServer(client), job.WithArch("x86_64"),
		job.WithRetry(3, time.Millisecond), job.WithOfflineBuild(true))
	if err != nil {
		t.Fatal(err)
	}
	var log sandboxtest.Buffer
	r := build(t.Context(), b, outcomeJob, "", poll.DefaultLogLimit, &log)
	if r.Result != poll.ResultSuccess {
		t.Fatalf("offline build: %s\n%s", r.Reason, log.String())
	}
	// The same version again: skipped, without a cut.
	r = build(t.Context(), b, outcomeJob, "", poll.DefaultLogLimit, &log)
	if r.Result != poll.ResultSkipped {
		t.Fatalf("second build: %s\n%s", r.Reason, log.String())
	}
	if got := sb.CutAtBuild(); !slices.Equal(got, []bool{true}) {
		t.Errorf("network cut at each build answer: %v, want [true]", got)
	}
	specs := sb.Specs()
	if len(specs) != 2 || !slices.Contains(specs[0].Env, "VAGENT_OFFLINE=1") || specs[0].NetworkControl == nil || specs[1].NetworkControl.IsCut() {
		t.Errorf("specs: %d, env %q, second build cut: %v", len(specs), specs[0].Env, len(specs) == 2 && specs[1].NetworkControl.IsCut())
	}
	if len(srv.Packages("bur", "x86_64")) != 2 {
		t.Error("the offline build's packages were not published")
	}
	for _, mode := range []sandbox.NetworkMode{sandbox.NetworkHost, sandbox.NetworkNone} {
		if _, err := job.New(sb, images, filepath.Join(t.TempDir(), "build"), job.WithNetwork(mode), job.WithOfflineBuild(true)); !errors.Is(err, job.ErrBadConfig) {
			t.Errorf("offline build with network %s: %v, want ErrBadConfig", mode, err)
		}
	}
}
