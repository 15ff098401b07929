package sandbox

import "errors"

var (
	// ErrInvalidSpec reports a Spec that cannot be run as given.
	ErrInvalidSpec = errors.New("invalid sandbox spec")
	// ErrClosed is returned by Run after Close.
	ErrClosed = errors.New("sandbox manager closed")
	// ErrNoSeccomp reports that the binary was built without seccomp support
	// (cgo and the "seccomp" build tag) while seccomp was asked for.
	ErrNoSeccomp = errors.New("seccomp support not compiled in (build with cgo and -tags seccomp)")
	// ErrLocked reports that another Manager holds the data directory.
	ErrLocked = errors.New("data directory in use by another sandbox manager")
	// ErrRootless reports a feature that rootless mode does not provide.
	ErrRootless = errors.New("not supported when running as a non-root user")
	// ErrLimitUnavailable reports a limit whose cgroup controller is not
	// available to the agent (not mounted, or not delegated to its cgroup).
	ErrLimitUnavailable = errors.New("limit cannot be applied on this host")
	// ErrNetworkUnavailable reports that an isolated network could not be
	// set up on this host (pasta missing or failing, no /dev/net/tun, no
	// network namespaces).
	ErrNetworkUnavailable = errors.New("isolated network unavailable")
	// ErrReleased is returned by Upper.Release when called more than once.
	ErrReleased = errors.New("upper already released")
)
