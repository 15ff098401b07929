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

// IDRange returns zeros outside Linux.
func (m *Manager) IDRange() (uid, gid, size uint32) { return 0, 0, 0 }

// Unlimited returns errors.ErrUnsupported outside Linux.
func (m *Manager) Unlimited() error { return errors.ErrUnsupported }

// DiskUsage returns errors.ErrUnsupported outside Linux.
func DiskUsage(root string) (int64, error) { return 0, errors.ErrUnsupported }

// EnterUserNamespace returns nil outside Linux: there is no rootless mode.
func EnterUserNamespace() error { return nil }

// InUserNamespace is false outside Linux.
func InUserNamespace() bool { return false }

// RootlessUser reports no rootless mode outside Linux.
func RootlessUser() (uid uint32, ok bool) { return 0, false }

// CgroupDelegated is nil outside Linux.
func CgroupDelegated() error { return nil }

// LowerShift is 0 outside Linux.
func LowerShift() uint32 { return 0 }
