package poll

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// DataDirLock is the agent lock of a data directory, DIR/vagent.lock: one
// agent (`vagent run`) per data directory. Other vagent commands share the
// data directory with the agent and do not take it. The kernel drops the
// lock when the process dies, so a crashed agent never blocks the next.
type DataDirLock struct {
	f   *os.File
	dir string
}

// LockDataDir creates dir (0755: builds resolve mounts below it as other
// users; the spool and the lock inside it are private) and takes its agent
// lock, recording this process's pid in it. When another agent holds it,
// the error wraps ErrLocked and names that agent's pid.
func LockDataDir(dir string) (*DataDirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "vagent.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking data dir: %w", err)
	}
	switch ok, err := lockfile.Lock(f, true, false); {
	case err != nil:
		f.Close()
		return nil, fmt.Errorf("locking data dir: %w", err)
	case !ok:
		defer f.Close()
		return nil, &lockedError{dir: dir, pid: lockHolder(f)}
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt(pid, 0) // only for the message of a second agent
	}
	return &DataDirLock{f: f, dir: dir}, nil
}

// Unlock releases the lock. It is idempotent.
func (l *DataDirLock) Unlock() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}

// lockHolder reads the pid the agent holding the lock wrote, 0 when it
// has not written it yet.
func lockHolder(f *os.File) int {
	for range 10 {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		if pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:n]))); err == nil && pid > 0 {
			return pid
		}
		time.Sleep(10 * time.Millisecond) // taken, its pid not yet written
	}
	return 0
}

// lockedError is a data directory another agent holds.
type lockedError struct {
	dir string
	pid int
}

func (e *lockedError) Error() string {
	if e.pid == 0 {
		return fmt.Sprintf("another vagent uses data dir %s", e.dir)
	}
	return fmt.Sprintf("another vagent (pid %d) uses data dir %s", e.pid, e.dir)
}

func (e *lockedError) Is(target error) bool { return target == ErrLocked }

// lockDir takes the agent lock of dir for Run.
func lockDir(dir string) (unlock func(), err error) {
	l, err := LockDataDir(dir)
	if err != nil {
		return nil, err
	}
	return l.Unlock, nil
}
