//go:build !linux

package sandbox

import (
	"context"
	"errors"
)

// Manager runs sandboxes; it is only available on Linux.
type Manager struct{}

// New returns errors.ErrUnsupported outside Linux.
func New(dataDir string, opts ...Option) (*Manager, error) { return nil, errors.ErrUnsupported }

// Run returns errors.ErrUnsupported outside Linux.
func (m *Manager) Run(ctx context.Context, spec Spec) (*Result, error) {
	return nil, errors.ErrUnsupported
}

// Close returns errors.ErrUnsupported outside Linux.
func (m *Manager) Close() error { return errors.ErrUnsupported }

// RootIDs returns 0, 0 outside Linux.
func (m *Manager) RootIDs() (uid, gid uint32) { return 0, 0 }
