//go:build unix

package lockfile

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Lock takes an advisory lock on f, exclusive or shared, waiting or not.
// It reports false when wait is unset and the lock is held elsewhere.
func Lock(f *os.File, exclusive, wait bool) (bool, error) {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		switch err := unix.Flock(int(f.Fd()), how); err {
		case nil:
			return true, nil
		case unix.EINTR:
			continue
		case unix.EWOULDBLOCK:
			return false, nil
		default:
			return false, err
		}
	}
}

// SyncFS flushes the file system that holds dir (syncfs(2)): what was
// written anywhere on it is on disk when it returns.
func SyncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// LockContext waits for a lock on f until ctx ends; it then returns
// ctx's error.
func LockContext(ctx context.Context, f *os.File, exclusive bool) error {
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		ok, err := Lock(f, exclusive, false)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}
