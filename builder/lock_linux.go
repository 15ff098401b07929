package builder

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// flock takes a lock on f: exclusive or shared, waiting or not. It
// reports false when wait is unset and the lock is held elsewhere.
func flock(f *os.File, exclusive, wait bool) (bool, error) {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		err := unix.Flock(int(f.Fd()), how)
		switch err {
		case nil:
			return true, nil
		case unix.EINTR:
			continue
		case unix.EWOULDBLOCK:
			return false, nil
		}
		return false, err
	}
}

// flockCtx waits for an exclusive lock on f until ctx ends.
func flockCtx(ctx context.Context, f *os.File) error {
	delay := 10 * time.Millisecond
	for {
		ok, err := flock(f, true, false)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// sameFile reports whether the open directory f is still the one at path
// (it was not moved away to be removed).
func sameFile(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// syncDir flushes the file system holding dir (syncfs), so that a
// published builder is complete on disk even after a power loss.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
