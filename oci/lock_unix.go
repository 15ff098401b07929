//go:build unix

package oci

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// flock takes an advisory lock on f. The kernel drops it when the process
// dies, which is how the store tells a crashed writer's leftovers from work
// in progress.
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
		default:
			return false, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
	}
}

// flockCtx waits for a lock until ctx ends.
func flockCtx(ctx context.Context, f *os.File, exclusive bool) error {
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		ok, err := flock(f, exclusive, false)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrStoreBusy, context.Cause(ctx))
		case <-time.After(delay):
		}
	}
}
