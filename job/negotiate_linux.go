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

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/lockfile"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/poll"
)

// decision is what the agent told the script after reading its .SRCINFO.
type decision struct {
	info   *SrcInfo
	build  bool   // "build" was sent
	reason string // why not, for skip and fail
	skip   bool
	err    error // the .SRCINFO could not be read
}

// runDir is the control directory of one build, mounted read-only on
// /run/vagent. It is owned by host root, which is outside the container's
// id range: the build cannot change what is in it.
type runDir struct {
	dir       string
	srcinfo   *os.File // FIFO, read by the agent
	decision  *os.File // FIFO, written by the agent
	lock      *os.File // held while the run lives (lockfile.RemoveStale)
	closeOnce sync.Once
}

func (b *Runner) newRun(repos []pacman.Repo, creds *urlCredentials) (_ *runDir, retErr error) {
	dir, lock, err := lockfile.MkdirTemp(b.runsDir(), "run-")
	if err != nil {
		return nil, err
	}
	run := &runDir{dir: dir, lock: lock}
	defer func() {
		if retErr != nil {
			run.remove()
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for _, name := range []string{"build.sh", "git-credential", "checkpkg"} {
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
	if creds != nil {
		if err := b.writeCredentials(filepath.Join(dir, credentialsFile), creds); err != nil {
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

// writeCredentials writes creds to path, readable by the mapped root only
// (the container's root; the builder user gets them from it).
func (b *Runner) writeCredentials(path string, creds *urlCredentials) error {
	uid, gid, _ := b.sb.IDRange()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o400)
	if err != nil {
		return err
	}
	if err := f.Chown(int(uid), int(gid)); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(creds.file()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
	r.lock.Close()
}

// maxSrcInfoHeader bounds the length line of the srcinfo FIFO.
const maxSrcInfoHeader = 64

// negotiate reads the .SRCINFO the script sends, decides whether to
// build, and answers. Before it answers "build" it calls cut, when set
// (an offline build()): the network must be gone before the script goes
// on. It returns when it answered or the FIFOs were closed.
func (b *Runner) negotiate(ctx context.Context, run *runDir, job poll.Job, cut func() error) decision {
	// The FIFO is writable by the build at any time: every read from it is
	// bounded, in size and, from the first byte on, in time. The header is
	// a decimal length on one line, read within the reader's buffer
	// (ReadSlice fails with ErrBufferFull past it).
	within := b.opts.srcInfoWithin
	br := bufio.NewReaderSize(&firstByteDeadline{f: run.srcinfo, within: within}, maxSrcInfoHeader)
	incomplete := decision{
		err:    fmt.Errorf("%w: the length line and the .SRCINFO did not arrive within %v of the first byte", ErrSrcInfo, within),
		reason: fmt.Sprintf("incomplete .SRCINFO after %v", within),
	}
	line, err := br.ReadSlice('\n')
	late := errors.Is(err, os.ErrDeadlineExceeded)
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) && !late {
		return decision{err: err}
	}
	header := strings.TrimSpace(string(line))
	var d decision
	size, convErr := strconv.Atoi(header)
	switch {
	case late:
		d = incomplete
	case errors.Is(err, bufio.ErrBufferFull):
		d = decision{err: fmt.Errorf("%w: length line longer than %d bytes", ErrSrcInfo, maxSrcInfoHeader), reason: "unreadable .SRCINFO"}
	case convErr != nil || size < 0:
		d = decision{err: fmt.Errorf("%w: bad length %q", ErrSrcInfo, header), reason: "unreadable .SRCINFO"}
	case size > MaxSrcInfo:
		d = decision{err: fmt.Errorf("%w: %d bytes", ErrSrcInfo, size), reason: ".SRCINFO too large"}
	default:
		data := make([]byte, size)
		if _, err := io.ReadFull(br, data); errors.Is(err, os.ErrDeadlineExceeded) {
			d = incomplete
			break
		} else if err != nil {
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
	if d.build && cut != nil {
		if err := cut(); err != nil {
			// Never build "offline" with the network up.
			d.build, d.err, d.reason = false, err, "offline build: "+err.Error()
		}
	}
	answer := "fail " + poll.OneLine(d.reason)
	switch {
	case d.skip:
		answer = "skip " + poll.OneLine(d.reason)
	case d.build:
		answer = "build"
	}
	if _, err := run.decision.Write([]byte(answer + "\n")); err != nil {
		d.build, d.skip = false, false
	}
	if d.err != nil {
		// Keep draining (through a fixed buffer: bounded), with no
		// deadline now, so that a script writing more cannot block.
		_ = run.srcinfo.SetReadDeadline(time.Time{})
		_, _ = io.Copy(io.Discard, br)
	}
	return d
}

// firstByteDeadline reads f and, once a read returned data, sets f's read
// deadline to within from then: the script may take as long as the job
// allows to start sending (makepkg --nobuild comes first), but a length
// line without its newline or a short .SRCINFO fails the reads that wait
// for the rest with os.ErrDeadlineExceeded. f must be pollable (a FIFO).
type firstByteDeadline struct {
	f      *os.File
	within time.Duration
	armed  bool
}

func (r *firstByteDeadline) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	if n > 0 && !r.armed {
		r.armed = true
		if derr := r.f.SetReadDeadline(time.Now().Add(r.within)); derr != nil && err == nil {
			err = fmt.Errorf("bounding the .SRCINFO's arrival: %w", derr)
		}
	}
	return n, err
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
