package poll

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockDir takes an exclusive advisory lock on dir/vagent.lock. The kernel
// drops it when the process dies, so a crashed agent never blocks the next.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(dir+"/vagent.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking data dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("locking data dir: %w", err)
	}
	return func() { _ = f.Close() }, nil
}
