package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/sirupsen/logrus"
)

// run is the state of one Run.
type run struct {
	m      *Manager
	spec   *Spec
	id     string
	dirs   runDirs
	log    logrus.FieldLogger
	c      *libcontainer.Container
	mounts bool    // rootfs mounts may exist
	net    *runNet // the isolated network

	teardownOnce sync.Once
	teardownErr  error
	upper        *Upper
}

// Run runs spec to completion and returns its result. An error means the
// run could not be set up (nothing was started, or what was is already
// removed); a process that ran and failed is a Result with a non-zero
// ExitCode. When ctx ends, the container is stopped (SIGTERM to every
// process, Spec.Grace, SIGKILL) and the Result says whether it timed out or
// was cancelled. Run removes everything it created before it returns, also
// when the caller's Output panics (the panic is re-raised afterwards),
// except an isolated run's pasta process: killed, it may still be exiting
// (removing its interface takes tens of milliseconds), and Close waits for
// it.
func (m *Manager) Run(ctx context.Context, spec Spec) (res *Result, retErr error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	limits := m.opts.limits
	if spec.Limits != nil {
		limits = *spec.Limits
	}
	if err := m.cg.checkLimits(limits); err != nil {
		return nil, err
	}
	if err := m.checkLowerOwner(spec.Lower); err != nil {
		return nil, err
	}
	if err := m.begin(); err != nil {
		return nil, err
	}
	defer m.active.Done()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("not started: %w", err)
	}
	id := newID()
	r := &run{
		m: m, spec: &spec, id: id,
		dirs: m.runDirs(id),
		log:  m.opts.log.WithField("container", id),
	}
	// Covers every early return and panics; the normal path tears down
	// explicitly to report errors.
	defer func() {
		if err := r.teardown(); err != nil && retErr == nil {
			r.log.WithError(err).Warn("sandbox teardown")
		}
		// A run that ends without a Result (a start error, a cancellation
		// while starting, a panic) hands its caller no upper: the one
		// teardown kept for Spec.KeepUpper goes (a Spec.Upper stays the
		// caller's).
		if res == nil && r.spec.Upper == nil && r.upper != nil {
			if err := r.upper.Release(); err != nil {
				r.log.WithError(err).Warn("removing the upper of a failed run")
			}
		}
	}()
	return r.run(ctx, limits)
}

func (r *run) run(ctx context.Context, limits Limits) (*Result, error) {
	m, spec := r.m, r.spec
	res := &Result{Started: time.Now()}
	r.mounts = true
	if err := m.mountRootfs(spec, r.dirs); err != nil {
		return nil, fmt.Errorf("preparing rootfs: %w", err)
	}
	rootfs := r.dirs.rootfs
	if spec.Network == NetworkIsolated {
		n, err := m.setupNetwork(ctx, spec, r.dirs, r.log)
		if err != nil {
			return nil, fmt.Errorf("setting up the isolated network: %w", err)
		}
		r.net = n
	}
	var disk *diskWatch
	if limits.Disk > 0 {
		var err error
		if disk, err = newDiskWatch(limits.Disk, r.writableTrees()); err != nil {
			return nil, fmt.Errorf("disk limit: %w", err)
		}
		defer disk.halt()
	}
	diskExceeded := make(<-chan struct{})
	if disk != nil {
		diskExceeded = disk.exceeded
	}
	cfg := m.containerConfig(spec, r.dirs, r.id, rootfs, limits)
	c, err := libcontainer.Create(m.stateDir, r.id, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating container: %w", err)
	}
	r.c = c

	out := spec.Output
	if out == nil {
		out = io.Discard
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	cp := startCopy(out, pr)

	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	groups := make([]int, len(spec.Groups))
	for i, g := range spec.Groups {
		groups[i] = int(g)
	}
	p := &libcontainer.Process{
		Args: spec.Args, Env: spec.Env,
		UID: int(spec.UID), GID: int(spec.GID), AdditionalGroups: groups,
		Cwd: dir, Stdout: pw, Stderr: pw, Init: true,
	}
	var term *terminal
	if spec.Terminal != nil {
		if term, err = newTerminal(); err != nil {
			pw.Close()
			cp.wait(r.log)
			return nil, err
		}
		defer term.close()
		p.Stdout, p.Stderr, p.ConsoleSocket = nil, nil, term.child
	}
	// The container is created and its init started while pasta sets up
	// the isolated network; the command runs once both are done.
	err = c.Start(p)
	if err == nil && r.net != nil {
		err = r.net.waitReady(ctx)
	}
	if err == nil {
		err = c.Exec()
	}
	pw.Close()
	if err == nil && term != nil {
		if aerr := term.attach(spec.Terminal); aerr != nil {
			waitCh := make(chan *os.ProcessState, 1)
			go func() {
				ps, _ := p.Wait()
				waitCh <- ps
			}()
			r.stop(p, waitCh)
			cp.wait(r.log)
			return nil, fmt.Errorf("starting container: %w", aerr)
		}
	}
	if err != nil {
		if code, ok := execFailure(err); ok {
			cp.wait(r.log)
			fmt.Fprintf(out, "vagent: %v\n", err)
			res.ExitCode, res.Finished = code, time.Now()
			return r.finish(res)
		}
		cp.wait(r.log)
		return nil, fmt.Errorf("starting container: %w", err)
	}
	r.log.WithField("pid", pidOf(p)).Debug("container started")

	waitCh := make(chan *os.ProcessState, 1)
	go func() {
		ps, _ := p.Wait()
		waitCh <- ps
	}()
	var ps *os.ProcessState
	select {
	case ps = <-waitCh:
	case <-ctx.Done():
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			res.TimedOut = true
		default:
			res.Cancelled = true
		}
		r.log.WithField("cause", context.Cause(ctx)).Debug("stopping container")
		ps = r.stop(p, waitCh)
	case <-diskExceeded:
		r.log.Debug("disk limit exceeded: killing the container")
		ps = r.kill(p, waitCh)
	case <-cp.panicked:
		ps = r.stop(p, waitCh)
	}
	res.Finished = time.Now()
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Exited():
				res.ExitCode = ws.ExitStatus()
			case ws.Signaled():
				res.Signal = ws.Signal()
				res.ExitCode = 128 + int(ws.Signal())
			}
		}
	} else {
		res.ExitCode = -1
	}
	res.OOMKilled = r.oomKilled()
	if disk != nil {
		// Before teardown, which moves the upper away.
		var reason string
		res.DiskExceeded, res.DiskUsage, reason = disk.finish()
		if res.DiskExceeded {
			r.log.WithField("reason", reason).Debug("disk limit exceeded")
		}
	}
	if err := r.teardown(); err != nil {
		return nil, err
	}
	cp.wait(r.log)
	if v := cp.panicValue(); v != nil {
		panic(v)
	}
	res.Upper = r.upper
	return res, nil
}

// writableTrees lists the host directories the run can write to: its
// upper directory (none for a read-only run) and the sources of its
// writable directory mounts.
func (r *run) writableTrees() []string {
	var roots []string
	if !r.spec.ReadOnly {
		roots = append(roots, r.dirs.upper)
	}
	for _, mnt := range r.spec.Mounts {
		if fi, err := os.Stat(mnt.Source); !mnt.ReadOnly && err == nil && fi.IsDir() {
			roots = append(roots, mnt.Source)
		}
	}
	return roots
}

// finish tears down a run that never got a process and returns res.
func (r *run) finish(res *Result) (*Result, error) {
	if err := r.teardown(); err != nil {
		return nil, err
	}
	res.Upper = r.upper
	return res, nil
}

// execFailure maps a start error caused by the command itself (not found,
// not executable) to the shell's exit code.
func execFailure(err error) (int, bool) {
	msg := err.Error()
	if !strings.Contains(msg, `exec: "`) && !strings.Contains(msg, "exec format error") {
		return 0, false
	}
	if strings.Contains(msg, "permission denied") || strings.Contains(msg, "exec format error") ||
		strings.Contains(msg, "is a directory") {
		return 126, true
	}
	return 127, true
}

func pidOf(p *libcontainer.Process) int {
	pid, err := p.Pid()
	if err != nil {
		return -1
	}
	return pid
}

// teardown destroys the container and removes the run's mounts and
// directories (keeping the upper when asked). It runs once; later calls
// return the first result.
func (r *run) teardown() error {
	r.teardownOnce.Do(func() { r.teardownErr = r.doTeardown() })
	return r.teardownErr
}

func (r *run) doTeardown() error {
	var errs []error
	if r.net != nil {
		// pasta exits while the container is destroyed (close waits).
		if err := r.net.shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	if r.c != nil {
		if err := r.c.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("destroying container: %w", err))
		}
	}
	if r.net != nil {
		if err := r.net.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if !r.mounts {
		return errors.Join(errs...)
	}
	if err := unmountRun(r.dirs); err != nil {
		// Never remove a directory that may still have a mount under it.
		return errors.Join(append(errs, err)...)
	}
	if r.spec.Upper != nil && len(errs) == 0 {
		// The kept upper the run started on goes back to its place.
		if _, err := os.Lstat(r.dirs.upper); err == nil {
			if err := os.Rename(r.dirs.upper, r.spec.Upper.Path); err != nil {
				errs = append(errs, fmt.Errorf("keeping upper: %w", err))
			}
		}
		r.upper = r.spec.Upper
	} else if r.spec.KeepUpper && len(errs) == 0 {
		kept := filepath.Join(r.m.keptDir, r.id)
		if err := os.Rename(r.dirs.upper, kept); err != nil {
			errs = append(errs, fmt.Errorf("keeping upper: %w", err))
		} else {
			r.upper = NewUpper(kept, r.m.rootUID, r.m.rootGID, func() error { return os.RemoveAll(kept) })
			r.upper.UserXattr = r.m.rootless
		}
	}
	if err := os.RemoveAll(r.dirs.base); err != nil {
		errs = append(errs, err)
	}
	if filepath.Dir(r.dirs.rootfs) != r.dirs.base { // rootless: below the runs' tmpfs
		if err := os.Remove(r.dirs.rootfs); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// copier copies the container's output to the caller's writer. A panic in
// the writer is caught, the rest of the output discarded, and the panic
// re-raised by Run once the container is gone.
type copier struct {
	r        *os.File
	done     chan struct{}
	panicked chan struct{}
	mu       sync.Mutex
	pv       any
}

func startCopy(w io.Writer, r *os.File) *copier {
	c := &copier{r: r, done: make(chan struct{}), panicked: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer func() {
			if v := recover(); v != nil {
				c.mu.Lock()
				c.pv = v
				c.mu.Unlock()
				close(c.panicked)
				_, _ = io.Copy(io.Discard, r)
			}
		}()
		// Only Write is used: no buffering beyond one read.
		buf := make([]byte, 32*1024)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					_, _ = io.Copy(io.Discard, r)
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return c
}

// wait waits for the copy to reach the end of the output. Every writer of
// the pipe is gone once the container is destroyed; the deadline only
// guards against a leaked descriptor.
func (c *copier) wait(log logrus.FieldLogger) {
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		log.Warn("output pipe still open after the container ended")
		_ = c.r.SetReadDeadline(time.Now())
		<-c.done
	}
}

func (c *copier) panicValue() any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pv
}
