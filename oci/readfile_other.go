//go:build !linux

package oci

import (
	"errors"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ReadRootfsFile needs Linux (openat2).
func ReadRootfsFile(dir, ref, name string, limit int64) ([]byte, v1.Hash, error) {
	return nil, v1.Hash{}, errors.ErrUnsupported
}
