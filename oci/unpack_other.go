//go:build !linux

package oci

import (
	"errors"
	"fmt"
)

func newApplier(string, *unpackOptions) (applier, error) {
	return nil, fmt.Errorf("unpacking layers: %w", errors.ErrUnsupported)
}
