package testkit

import "errors"

var (
	// ErrToolMissing is returned when an external program the kit needs
	// (docker-registry, debootstrap, busybox) is not installed.
	ErrToolMissing = errors.New("tool not installed")
	// ErrNotRoot is returned when building an image needs root.
	ErrNotRoot = errors.New("root privileges needed")
	// ErrNoMirror is returned when no usable Debian mirror is configured
	// in the apt sources.
	ErrNoMirror = errors.New("no debian mirror in apt sources")
	// ErrRegistryExited is returned when the registry process exits
	// before it answers.
	ErrRegistryExited = errors.New("registry exited")
)
