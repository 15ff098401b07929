package job_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/sandbox"
)

// script is what the fake sandbox does in place of build.sh.
type script struct {
	// runErr is returned by Run before anything runs.
	runErr error
	// srcinfo is written into the srcinfo FIFO as it is (see
	// lengthPrefixed); nil writes nothing: the script ends without asking.
	srcinfo []byte
	// packages are left in /build/out when the agent says "build" (also
	// when the build then fails, as a split package may).
	packages []vieterserver.PkgInfo
	// exitCode is the build's exit status after "build"; oom says that
	// the kernel killed it for memory.
	exitCode int
	oom      bool
	// disk says that the sandbox stopped it over its disk limit (it may
	// also have exited 0 first: the last measurement found it over).
	disk bool
	// block makes the build run until its context is done, as a build
	// that runs into the job's timeout does.
	block bool
	// panics makes Run panic before it starts anything.
	panics bool
}

// lengthPrefixed is what build.sh writes into the srcinfo FIFO: the
// decimal length of the .SRCINFO on a line, then the .SRCINFO.
func lengthPrefixed(srcinfo string) []byte {
	return fmt.Appendf(nil, "%d\n%s", len(srcinfo), srcinfo)
}

// Bounds of the fake's waits: a bug in the agent fails the test instead of
// hanging it.
const (
	fakeWait        = 10 * time.Second
	maxDecisionLine = 4096
)

// builderID is the container uid and gid of the builder user, who owns
// what the build leaves in /build.
const builderID = 1000

// fakeSandbox is a job.Sandbox without containers: Run finds the control
// directory among the Spec's mounts and plays build.sh's part of the FIFO
// protocol as its script says, then leaves an upper directory with
// /build/out as a build leaves it, owned by the shifted ids of IDRange.
// It records every Spec it gets.
type fakeSandbox struct {
	t      testing.TB
	script script
	// onBlock is called when a blocking build starts to wait.
	onBlock func()
	// uid, gid, size are IDRange's: as the Manager's with a user namespace
	// when the test is root, as a rootless one's otherwise.
	uid, gid, size uint32

	mu     sync.Mutex
	specs  []sandbox.Spec
	uppers []string
	seq    atomic.Int32
	// cutAtBuild records, for every "build" answer, whether the run's
	// network was cut when the answer came (nil control: false).
	cutAtBuild []bool
}

var _ job.Sandbox = (*fakeSandbox)(nil)

func newFakeSandbox(t testing.TB, s script) *fakeSandbox {
	f := &fakeSandbox{t: t, script: s, uid: 100000, gid: 100000, size: 65536}
	if os.Geteuid() != 0 {
		f.uid, f.gid, f.size = uint32(os.Geteuid()), uint32(os.Getegid()), 1
	}
	return f
}

// IDRange implements job.Sandbox.
func (f *fakeSandbox) IDRange() (uid, gid, size uint32) { return f.uid, f.gid, f.size }

// Specs returns the Specs Run got, in order.
func (f *fakeSandbox) Specs() []sandbox.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sandbox.Spec(nil), f.specs...)
}

// CutAtBuild returns, for every "build" answer, whether the network was
// cut before it came.
func (f *fakeSandbox) CutAtBuild() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bool(nil), f.cutAtBuild...)
}

// Uppers returns the upper directories Run handed back.
func (f *fakeSandbox) Uppers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.uppers...)
}

// Run implements job.Sandbox.
func (f *fakeSandbox) Run(ctx context.Context, spec sandbox.Spec) (*sandbox.Result, error) {
	f.mu.Lock()
	f.specs = append(f.specs, spec)
	f.mu.Unlock()
	if f.script.runErr != nil {
		return nil, f.script.runErr
	}
	if f.script.panics {
		panic("fake sandbox: panic in Run")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("not started: %w", err)
	}
	if spec.Terminal != nil {
		// An inspection: a shell on the kept upper, attached and ended.
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		w.Close()
		spec.Terminal(r)
		r.Close()
		return &sandbox.Result{Started: time.Now(), Finished: time.Now(), Upper: spec.Upper}, nil
	}
	ctl := ""
	for _, m := range spec.Mounts {
		if m.Target == "/run/vagent" {
			ctl = m.Source
		}
	}
	if ctl == "" {
		return nil, errors.New("fake sandbox: no mount on /run/vagent")
	}
	out := spec.Output
	if out == nil {
		out = io.Discard
	}
	res := &sandbox.Result{Started: time.Now()}
	upper := ""
	if spec.KeepUpper {
		var err error
		if upper, err = f.newUpper(); err != nil {
			return nil, err
		}
		f.mu.Lock()
		f.uppers = append(f.uppers, upper)
		f.mu.Unlock()
		res.Upper = sandbox.NewUpper(upper, f.uid, f.gid, func() error { return os.RemoveAll(upper) })
	}
	res.ExitCode = f.play(ctx, ctl, upper, out, res, spec.NetworkControl)
	res.Finished = time.Now()
	return res, nil
}

// play runs the script: it returns the exit code and marks res when the
// build was stopped or killed.
func (f *fakeSandbox) play(ctx context.Context, ctl, upper string, out io.Writer, res *sandbox.Result, net *sandbox.NetworkControl) int {
	s := f.script
	fmt.Fprintln(out, "+ makepkg --nobuild --syncdeps --needed --noconfirm")
	if s.srcinfo == nil {
		fmt.Fprintln(out, "fake: the script ends without sending a .SRCINFO")
		return 0
	}
	fmt.Fprintln(out, "+ srcinfo")
	if err := writeFIFO(filepath.Join(ctl, "srcinfo"), s.srcinfo); err != nil {
		f.t.Errorf("fake sandbox: writing the .SRCINFO: %v", err)
		return 1
	}
	line, err := readLine(filepath.Join(ctl, "decision"))
	switch {
	case err != nil:
		f.t.Errorf("fake sandbox: no decision from the agent: %v", err)
		fmt.Fprintln(out, "vagent: no decision from the agent")
		return 1
	case strings.HasPrefix(line, "skip "):
		fmt.Fprintf(out, "vagent: skipping the build: %s\n", strings.TrimPrefix(line, "skip "))
		return 0
	case line != "build":
		fmt.Fprintf(out, "vagent: %s\n", strings.TrimPrefix(line, "fail "))
		return 1
	}
	f.mu.Lock()
	f.cutAtBuild = append(f.cutAtBuild, net != nil && net.IsCut())
	f.mu.Unlock()
	fmt.Fprintln(out, "+ makepkg --syncdeps --needed --noconfirm --noextract")
	for _, p := range s.packages {
		if err := f.writePackage(upper, p); err != nil {
			f.t.Errorf("fake sandbox: %v", err)
			return 1
		}
	}
	if s.block {
		fmt.Fprintln(out, "building until the job's deadline")
		if f.onBlock != nil {
			f.onBlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(fakeWait):
			f.t.Errorf("fake sandbox: blocked %s and the context is not done", fakeWait)
		}
		// The Manager stops the container with SIGTERM.
		res.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		res.Cancelled = !res.TimedOut
		res.Signal = syscall.SIGTERM
		return 128 + int(syscall.SIGTERM)
	}
	res.OOMKilled = s.oom
	res.DiskExceeded = s.disk
	if s.exitCode != 0 {
		fmt.Fprintln(out, "==> ERROR: A failure occurred in build().")
	}
	return s.exitCode
}

// newUpper makes an upper directory as the sandbox leaves one: /build and
// /build/out owned by the builder, both shifted by IDRange's base.
func (f *fakeSandbox) newUpper() (string, error) {
	upper := filepath.Join(f.t.TempDir(), fmt.Sprintf("upper-%d", f.seq.Add(1)))
	for _, d := range []string{upper, filepath.Join(upper, "build"), filepath.Join(upper, "build/out")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", err
		}
		id := builderID
		if d == upper {
			id = 0
		}
		if err := f.chown(d, id); err != nil {
			return "", err
		}
	}
	return upper, nil
}

// writePackage leaves a real package in /build/out of upper.
func (f *fakeSandbox) writePackage(upper string, info vieterserver.PkgInfo) error {
	data, err := vieterserver.MakePackage(info, map[string]string{"usr/share/" + info.Name + "/version": info.Version + "\n"}, vieterserver.Zstd)
	if err != nil {
		return err
	}
	p := filepath.Join(upper, "build/out", info.Name+"-"+info.Version+"-"+info.Arch+".pkg.tar.zst")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return err
	}
	return f.chown(p, builderID)
}

// chown gives p to container id (uid and gid) as the sandbox's id mapping
// does. Without root the ids stay the test's own (rootless: container
// root is the agent's user).
func (f *fakeSandbox) chown(p string, id int) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return os.Lchown(p, int(f.uid)+id, int(f.gid)+id)
}

// writeFIFO writes data into the FIFO p, which the agent holds open.
func writeFIFO(p string, data []byte) error {
	w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.SetWriteDeadline(time.Now().Add(fakeWait)); err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// readLine reads one line of at most maxDecisionLine bytes from the FIFO
// p within fakeWait.
func readLine(p string) (string, error) {
	r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if err := r.SetReadDeadline(time.Now().Add(fakeWait)); err != nil {
		return "", err
	}
	var line []byte
	buf := make([]byte, 256)
	for len(line) <= maxDecisionLine {
		n, err := r.Read(buf)
		line = append(line, buf[:n]...)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			return string(line[:i]), nil
		}
		if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("no line break in %d bytes", len(line))
}
