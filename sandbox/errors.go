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
	// ErrLocked reports that an older vagent, which holds its data
	// directory alone, uses the data directory.
	ErrLocked = errors.New("data directory in use by an older vagent that does not share it (stop it first)")
	// ErrIDRangeInUse reports that another live Manager of the data
	// directory maps a different id range.
	ErrIDRangeInUse = errors.New("every process on a data directory must map the same id range")
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
