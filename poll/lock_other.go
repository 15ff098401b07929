//go:build !linux

package poll

import (
	"errors"
	"fmt"
)

func lockDir(string) (func(), error) {
	return nil, fmt.Errorf("locking data dir: %w", errors.ErrUnsupported)
}
