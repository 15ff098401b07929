//go:build !linux

package poll

import (
	"errors"
	"fmt"
)

// DataDirLock is the agent lock of a data directory (Linux only).
type DataDirLock struct{}

// LockDataDir returns errors.ErrUnsupported outside Linux.
func LockDataDir(string) (*DataDirLock, error) {
	return nil, fmt.Errorf("locking data dir: %w", errors.ErrUnsupported)
}

// Unlock does nothing outside Linux.
func (l *DataDirLock) Unlock() {}

func lockDir(string) (func(), error) {
	return nil, fmt.Errorf("locking data dir: %w", errors.ErrUnsupported)
}
