//go:build !unix

package lockfile

import (
	"context"
	"errors"
	"os"
)

// Lock is not supported on this platform.
func Lock(*os.File, bool, bool) (bool, error) { return false, errors.ErrUnsupported }

// SyncFS is not supported on this platform.
func SyncFS(string) error { return errors.ErrUnsupported }

// LockContext is not supported on this platform.
func LockContext(context.Context, *os.File, bool) error { return errors.ErrUnsupported }
