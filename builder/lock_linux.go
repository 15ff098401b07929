package builder

import (
	"context"
	"os"

	"github.com/vieter-v/vagent/internal/lockfile"
	"golang.org/x/sys/unix"
)

// flock takes a lock on f: exclusive or shared, waiting or not. It
// reports false when wait is unset and the lock is held elsewhere.
func flock(f *os.File, exclusive, wait bool) (bool, error) { return lockfile.Lock(f, exclusive, wait) }

// flockCtx waits for an exclusive lock on f until ctx ends.
func flockCtx(ctx context.Context, f *os.File) error { return lockfile.LockContext(ctx, f, true) }

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
