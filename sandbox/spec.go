package sandbox

import (
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NetworkMode selects the network of a run.
type NetworkMode int

const (
	// NetworkIsolated (the default) gives the run a network namespace of
	// its own that the Manager creates and owns: container root has no
	// privilege in it, so it cannot change its routes or rules. Its
	// egress goes through pasta (a user-mode network stack, Debian's
	// passt) as connections the agent's host makes; nothing of the host
	// is reachable from it: not its loopback (127.0.0.0/8, ::1), its
	// abstract unix sockets, its own addresses, link-local addresses
	// (169.254.0.0/16, fe80::/10: cloud metadata services), multicast and
	// broadcast, nor the destinations of WithNetworkDeny. Spec.Forward
	// names the host's endpoints a run may reach, and the host's loopback
	// name servers are forwarded for DNS. No port of the run is reachable
	// from the host or from another run. See docs/security.md.
	NetworkIsolated NetworkMode = iota
	// NetworkHost shares the host's network namespace: the run reaches
	// everything the host does, its loopback services and abstract unix
	// sockets included, and may bind the host's ports. Unsafe for
	// untrusted builds. The host's /etc/resolv.conf and /etc/hosts are
	// bind-mounted read-only.
	NetworkHost
	// NetworkNone gives the run its own network namespace with only the
	// loopback interface, up.
	NetworkNone
)

func (n NetworkMode) String() string {
	switch n {
	case NetworkIsolated:
		return "isolated"
	case NetworkHost:
		return "host"
	case NetworkNone:
		return "none"
	}
	return fmt.Sprintf("NetworkMode(%d)", int(n))
}

// ParseNetworkMode parses "isolated", "host" or "none".
func ParseNetworkMode(s string) (NetworkMode, error) {
	for _, n := range []NetworkMode{NetworkIsolated, NetworkHost, NetworkNone} {
		if s == n.String() {
			return n, nil
		}
	}
	return 0, fmt.Errorf("unknown network mode %q (want isolated, host or none)", s)
}

// Mount is an extra bind mount into the container.
type Mount struct {
	// Source is an absolute host path (file or directory).
	Source string
	// Target is an absolute path inside the container; it is created when
	// missing (in the run's upper, never in the lower).
	Target string
	// ReadOnly makes the mount, and every mount under it, read-only.
	ReadOnly bool
	// IDMapped maps the files of Source through the run's id mapping, so
	// that host uid 0 appears as container root. It needs ReadOnly:
	// through a writable idmapped mount container root would write as host
	// root (setuid-root files on the host). Without it host files appear
	// owned by the overflow id (nobody) and container root can only write
	// what is writable by the mapped host ids: a writable shared directory
	// is owned by Manager.IDRange instead. Ignored without a user
	// namespace.
	IDMapped bool
}

// Limits are cgroup resource limits. A zero field means no limit.
type Limits struct {
	// Memory is the memory limit in bytes.
	Memory int64
	// MemorySwap is the limit of memory plus swap in bytes (as Docker's
	// --memory-swap): 0 means no swap on top of Memory, -1 unlimited swap.
	// It needs Memory.
	MemorySwap int64
	// Pids is the maximum number of processes and threads.
	Pids int64
	// CPUWeight is the relative CPU weight, 1–10000 (cgroup v2 semantics;
	// 100 is the kernel default). On cgroup v1 it is converted to cpu.shares.
	CPUWeight uint64
	// CPUQuota is the number of CPUs the run may use (e.g. 1.5).
	CPUQuota float64
	// Disk bounds, in bytes, what the run adds to the host's disk: its
	// upper directory and its writable mounts, beyond what they held when
	// it started (see disk_linux.go). No file may grow past it (the kernel
	// refuses, RLIMIT_FSIZE) and a run whose trees hold more is stopped
	// (Result.DiskExceeded). It needs no cgroup and works rootless.
	Disk int64
}

// cgroupZero tells whether l sets no cgroup limit (Disk is not one).
func (l Limits) cgroupZero() bool {
	l.Disk = 0
	return l == Limits{}
}

// Spec describes one run.
type Spec struct {
	// Lower is the prepared root filesystem directory, unshifted (owned by
	// host root as an unpacker produced it). It is never written to. Its path
	// must not contain ',', ':' or '\' (overlayfs option syntax).
	Lower string
	// ReadOnly runs directly on Lower, mounted read-only, without an overlay
	// (KeepUpper must be false). /tmp is still a writable tmpfs.
	ReadOnly bool
	// Args is the command and its arguments; Args[0] is looked up in PATH
	// from Env when it has no slash.
	Args []string
	// Env is the complete environment, "KEY=value" entries.
	Env []string
	// Dir is the absolute working directory (default "/"); it is created
	// when missing.
	Dir string
	// UID and GID are the container user and group (e.g. 0, or 1000 for
	// the builder user); Groups are supplementary groups.
	UID, GID uint32
	Groups   []uint32
	// Hostname is the container's hostname (default "vagent").
	Hostname string
	// Network is the network mode (default NetworkIsolated).
	Network NetworkMode
	// Forward lists TCP endpoints, "host:port", that an isolated run
	// reaches at that same address. An endpoint of this host (a loopback
	// address, "localhost", or one of the host's own addresses) is
	// forwarded by the agent: it listens at host:port inside the run's
	// network namespace and connects each connection to exactly host:port
	// on the host, and to nothing else. Any other endpoint is reached
	// through the run's network as usual, even when WithNetworkDeny
	// refuses its address. Names are resolved when the run starts.
	Forward []string
	// NetworkControl, when set, lets the caller take an isolated run's
	// network away while the run goes on (see NetworkControl).
	NetworkControl *NetworkControl
	// Mounts are extra bind mounts.
	Mounts []Mount
	// Limits override the Manager's default limits when non-nil.
	Limits *Limits
	// KeepUpper keeps the run's overlay upper directory and returns it in
	// Result.Upper; the caller must Release it.
	KeepUpper bool
	// Upper, when set, is an upper directory an earlier run of this
	// Manager kept (its Result.Upper, not released): the run starts on
	// that run's files, as it left them, and writes over them. Afterwards
	// the upper is kept again at its path (Result.Upper is Upper) and stays
	// the caller's to Release. Lower must be the earlier run's. A run on
	// an Upper implies KeepUpper.
	Upper *Upper
	// Terminal, when set, gives the process a pseudo-terminal made inside
	// the container (on its own /dev/pts) as its standard input, output
	// and error and its controlling terminal, instead of Output: an
	// interactive shell. Run calls Terminal in a goroutine of its own with
	// the terminal's master side once the process started, and closes
	// the master when the process ended and Terminal returned (or after a
	// short grace). Terminal copies between the master and the user's
	// terminal (and may resize it); it must return once a read of the
	// master fails, which happens when the process and its children have
	// closed the terminal.
	Terminal func(master *os.File)
	// Output receives stdout and stderr merged, live. Nil discards them.
	Output io.Writer
	// Grace is the time between SIGTERM and SIGKILL when the context ends
	// (0: the Manager's default).
	Grace time.Duration
}

// Result is the outcome of a run that started.
type Result struct {
	// ExitCode is the process's exit status, or 128+signal when it was
	// killed by a signal (the shell convention). A command that could not
	// be executed (not found, not executable) gives 127.
	ExitCode int
	// Signal is the signal that killed the process, or 0.
	Signal syscall.Signal
	// Started and Finished bracket the container's life: from the start
	// of container creation to the exit of its init process.
	Started, Finished time.Time
	// TimedOut is set when the context's deadline ended the run, Cancelled
	// when the context was cancelled otherwise.
	TimedOut, Cancelled bool
	// OOMKilled is set when the kernel killed a process of the run because
	// the memory limit was hit.
	OOMKilled bool
	// DiskExceeded is set when the run added more than Limits.Disk to the
	// disk (or a tree too deep to measure): it was stopped with SIGKILL
	// once seen, or it had ended already and the last measurement found it.
	DiskExceeded bool
	// DiskUsage is what the run had added to the disk at the last
	// measurement, with Limits.Disk set (bytes; see Limits.Disk).
	DiskUsage int64
	// Upper is the kept overlay upper directory when Spec.KeepUpper was set.
	Upper *Upper
}

// Upper is a kept overlay upper directory: a standard overlayfs upper
// (0/0 character device whiteouts, trusted.overlay.opaque xattrs, or
// user.overlay.opaque with UserXattr). File
// ownership in it is shifted: host id = container id + UIDBase (GIDBase).
type Upper struct {
	// Path is the upper directory.
	Path string
	// UIDBase and GIDBase are the host ids of container root (0 when the
	// run had no user namespace).
	UIDBase, GIDBase uint32
	// UserXattr is set when the overlay kept its attributes in the user
	// namespace (a rootless agent's, mounted with userxattr): an opaque
	// directory carries user.overlay.opaque="y" rather than
	// trusted.overlay.opaque.
	UserXattr bool

	release func() error
	once    sync.Once
}

// NewUpper returns an Upper for the directory path, whose files are owned
// by host ids shifted by uidBase and gidBase. release removes the directory
// and is called by the first Release only (nil: nothing to remove). It is
// for implementations of a sandbox other than Manager, such as fakes in
// tests; Manager's Run makes the Uppers it keeps with it too.
func NewUpper(path string, uidBase, gidBase uint32, release func() error) *Upper {
	return &Upper{Path: path, UIDBase: uidBase, GIDBase: gidBase, release: release}
}

// Release removes the upper directory. It is safe to call more than once;
// later calls return ErrReleased.
func (u *Upper) Release() error {
	err := ErrReleased
	u.once.Do(func() {
		err = nil
		if u.release != nil {
			err = u.release()
		}
	})
	return err
}

// validate checks a Spec's fields, which may come from untrusted job data.
func (s *Spec) validate() error {
	if s.Lower == "" || !path.IsAbs(s.Lower) {
		return fmt.Errorf("%w: lower %q must be an absolute path", ErrInvalidSpec, s.Lower)
	}
	if strings.ContainsAny(s.Lower, ",:\\\n") {
		return fmt.Errorf("%w: lower %q contains ',', ':' or '\\'", ErrInvalidSpec, s.Lower)
	}
	if s.ReadOnly && (s.KeepUpper || s.Upper != nil) {
		return fmt.Errorf("%w: read-only run has no upper to keep", ErrInvalidSpec)
	}
	if s.Upper != nil && (s.Upper.Path == "" || !path.IsAbs(s.Upper.Path)) {
		return fmt.Errorf("%w: upper %q is not a kept upper", ErrInvalidSpec, s.Upper.Path)
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return fmt.Errorf("%w: no command", ErrInvalidSpec)
	}
	for _, a := range s.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("%w: argument contains NUL", ErrInvalidSpec)
		}
	}
	for _, e := range s.Env {
		if strings.IndexByte(e, 0) >= 0 || !strings.Contains(e, "=") || strings.HasPrefix(e, "=") {
			return fmt.Errorf("%w: malformed environment entry", ErrInvalidSpec)
		}
	}
	if s.Dir != "" && (!path.IsAbs(s.Dir) || strings.IndexByte(s.Dir, 0) >= 0) {
		return fmt.Errorf("%w: working directory %q must be absolute", ErrInvalidSpec, s.Dir)
	}
	if len(s.Hostname) > 64 {
		return fmt.Errorf("%w: hostname longer than 64 bytes", ErrInvalidSpec)
	}
	for _, c := range s.Hostname {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("%w: hostname %q has invalid characters", ErrInvalidSpec, s.Hostname)
		}
	}
	if err := ValidateNetwork(s.Network, s.Forward); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if s.Network != NetworkIsolated && (len(s.Forward) > 0 || s.NetworkControl != nil) {
		return fmt.Errorf("%w: forwards and network control need the isolated network, not %s", ErrInvalidSpec, s.Network)
	}
	for _, m := range s.Mounts {
		if !path.IsAbs(m.Source) || !path.IsAbs(m.Target) {
			return fmt.Errorf("%w: mount %q -> %q: paths must be absolute", ErrInvalidSpec, m.Source, m.Target)
		}
		if path.Clean(m.Target) == "/" {
			return fmt.Errorf("%w: mount over /", ErrInvalidSpec)
		}
		if m.IDMapped && !m.ReadOnly {
			// Container root would write there as host root: setuid-root
			// files on the host.
			return fmt.Errorf("%w: idmapped mount %q must be read-only", ErrInvalidSpec, m.Source)
		}
	}
	if s.Limits != nil {
		if err := s.Limits.validate(); err != nil {
			return err
		}
	}
	if s.Grace < 0 {
		return fmt.Errorf("%w: negative grace period", ErrInvalidSpec)
	}
	return nil
}

func (l *Limits) validate() error {
	switch {
	case l.Memory < 0, l.Pids < 0, l.CPUQuota < 0, l.Disk < 0:
		return fmt.Errorf("%w: negative limit", ErrInvalidSpec)
	case l.MemorySwap != 0 && l.MemorySwap != -1 && l.MemorySwap < l.Memory:
		return fmt.Errorf("%w: memory+swap limit below memory limit", ErrInvalidSpec)
	case l.MemorySwap != 0 && l.Memory == 0:
		return fmt.Errorf("%w: memory+swap limit without memory limit", ErrInvalidSpec)
	case l.CPUWeight > 10000:
		return fmt.Errorf("%w: cpu weight %d above 10000", ErrInvalidSpec, l.CPUWeight)
	}
	return nil
}
