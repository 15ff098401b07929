package oci

import (
	"context"
	"fmt"
	"os"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// flock takes an advisory lock on f. The kernel drops it when the process
// dies, which is how the store tells a crashed writer's leftovers from work
// in progress.
func flock(f *os.File, exclusive, wait bool) (bool, error) {
	ok, err := lockfile.Lock(f, exclusive, wait)
	if err != nil {
		return false, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return ok, nil
}

// flockCtx waits for a lock until ctx ends.
func flockCtx(ctx context.Context, f *os.File, exclusive bool) error {
	err := lockfile.LockContext(ctx, f, exclusive)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrStoreBusy, context.Cause(ctx))
	}
	return err
}

// lockFile opens (creating it) the lock file p and locks it, waiting
// until ctx ends. Closing the file drops the lock.
func lockFile(ctx context.Context, p string, exclusive bool) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := flockCtx(ctx, f, exclusive); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
