// Package sandbox runs one process tree in an isolated, limited and killable
// Linux container and leaves nothing behind.
//
// It uses runc's libcontainer in-process: there is no daemon and no runc
// binary. A [Manager] owns a data directory; every [Manager.Run] gets:
//
//   - a root filesystem that is an overlayfs mount whose read-only lower is
//     a prepared rootfs directory ([Spec.Lower], shared by concurrent runs,
//     stored unshifted: owned by host uid 0 as an image unpacker produces it)
//     and whose upper and work directories are private to the run. Writes
//     never reach the lower. After the run the upper is removed or, with
//     [Spec.KeepUpper], handed to the caller as a standard overlay upper
//     (whiteouts are 0/0 character devices, opaque directories carry
//     trusted.overlay.opaque="y"; redirect_dir, metacopy and index are off).
//   - a user namespace: container ids 0–65535 map to host ids starting at
//     100000 (see [WithIDMap]; [HostIDs.Pick] finds a free range, and
//     [HostIDs.Conflicts] tells who else uses one). The lower is made to look owned by the mapped
//     ids with an idmapped bind mount (mount_setattr MOUNT_ATTR_IDMAP), so one
//     unshifted copy of an image serves every run. Files the run creates in its
//     upper are owned by the shifted host ids ([Upper.UIDBase]).
//   - new mount, pid, ipc and uts namespaces, and a network:
//     [NetworkIsolated] (the default) is a network namespace the Manager
//     creates, owns (container root has no privilege in it) and
//     bind-mounts on <data>/netns/<id>; pasta (Debian's passt) gives it the
//     host's egress; policy-routing rules in it refuse link-local,
//     multicast and broadcast addresses, the host's own addresses and
//     [WithNetworkDeny]; the host's loopback and abstract sockets are out
//     of reach, being another namespace's. [Spec.Forward] names endpoints
//     of the host the run reaches: the agent listens on them inside the
//     namespace and connects each connection to exactly that host:port
//     (the host's loopback name servers get one too). [Spec.NetworkControl]
//     cuts the network while the run goes on. [NetworkHost] shares the
//     host's namespace (unsafe for untrusted code), [NetworkNone] gives a
//     new namespace with only loopback up. The host's /etc/resolv.conf and
//     /etc/hosts are bind-mounted read-only. See docs/security.md.
//   - /proc (with Docker's masked and read-only paths), a minimal /dev (null,
//     zero, full, random, urandom, tty, ptmx, pts, shm, mqueue), /sys bound
//     read-only, a /tmp tmpfs of a fixed size ([WithTmpSize], default 1 GiB)
//     and the caller's extra bind mounts. A bind mount is id-mapped only
//     when asked ([Mount.IDMapped]); a writable host directory shared by
//     runs should instead be owned by [Manager.IDRange] and mounted plainly,
//     so that container root writes there as the unprivileged mapped root.
//   - Docker's default capability set (effective only for container root; a
//     non-root user gets it as bounding set so sudo and su work), no
//     no_new_privs, and a seccomp allow-list after Docker's default profile
//     (seccomp_syscalls.go says where the list comes from): privileged
//     calls (mount, kexec, modules, bpf, keyrings, ptrace attach, perf,
//     swap, reboot, setns, unshare, open_by_handle_at, userfaultfd,
//     io_uring…) get EPERM, every call the lists do not allow gets ENOSYS
//     so that libc falls back, newer kernels' calls included.
//   - cgroup limits: memory (and memory+swap), pids, CPU weight and quota,
//     with cgroup v1 (including hybrid hosts) and cgroup v2. On cgroup v2
//     the runs' cgroups go below the agent's own cgroup, into which New
//     first moves the agent's processes out of the way (a "vagent-agent"
//     leaf): this works in a systemd unit with Delegate=yes, at the root of
//     a private cgroup namespace and inside a Kubernetes pod's cgroup. A
//     limit whose controller is not available is refused with
//     [ErrLimitUnavailable] (docs/sandbox.md, "cgroups").
//   - a disk limit ([Limits.Disk]) on what the run adds to its upper and
//     writable mounts: RLIMIT_FSIZE, and a watcher in the agent that kills a
//     run whose trees hold more ([Result.DiskExceeded]); no cgroup, quota
//     or loop device, so it works rootless too ([DiskUsage] measures a tree
//     the same way; docs/sandbox.md, "Disk limit").
//
// Output: the process's stdout and stderr are one pipe copied live, in
// order, to [Spec.Output]; nothing is buffered whole. With [Spec.Terminal]
// the process gets a pseudo-terminal the container's init makes on the
// container's own /dev/pts instead, whose master side the caller gets (an
// interactive shell). [Spec.Upper] starts a run on the upper an earlier
// run kept, which is moved into the run and back (a second look at a
// finished build's tree).
//
// Stopping: when the run's context ends, every process of the container gets
// SIGTERM, then after [Spec.Grace] (default 1s, see [WithGrace]) SIGKILL; the
// container is destroyed and its mounts and directories removed. [Result]
// tells whether the run timed out (context deadline) or was cancelled.
//
// Host side: the uppers hold files owned by container ids, setuid ones
// included. runs/ (where running uppers live) is mode 0700 and owned by the
// mapped root, which the container's init needs to resolve its rootfs below
// it; kept/ is 0700 and root's. No other host user can reach a file of a
// run. The data directory's ancestors must stay searchable (o+x) by the
// mapped root, which New checks; a data directory reached through a
// symbolic link is used by its real path.
//
// Cleanup and recovery: every Run removes its container state, cgroups,
// mounts, network namespace and directories on every path (success,
// failure, timeout, a panic in the caller's Output writer, which Run
// re-raises after cleaning up); pasta, killed, exits in the background and
// [Manager.Close] waits for it.
// Several Managers — of several processes: an agent and `vagent build` —
// share a data directory; each works in an instance directory of its own
// (m/<inst>, with its state, runs, kept uppers and network namespaces, and
// a cgroup parent of its own), which it holds an flock on while it lives.
// [New] first kills and removes whatever dead Managers left there — the
// instances whose lock it can take: containers (the parent-death signal
// does not reach them), their cgroups, mounts, upper directories and kept
// uppers that were never released, and the isolated networks: pasta dies
// with its process (its parent-death signal, tied to a thread that lives
// as long as the process); one that did not is killed by the pid its run
// recorded, and the namespaces' bind mounts are removed, which frees them
// with their interfaces and rules — and never touches a live one's. Live
// Managers of one data directory must map the same id range
// ([ErrIDRangeInUse]). An older vagent held the data directory alone, with
// an exclusive lock: beside it New fails with [ErrLocked]; after it, New
// removes what it left.
//
// Seccomp needs a binary built with cgo and the build tag "seccomp"
// (libseccomp linked statically; see the Makefile). Without it
// [SeccompSupported] is false and [New] refuses to start unless the caller
// opts out explicitly with WithSeccomp(false): a sandbox never silently runs
// with less isolation than asked for. `vagent check` reports it.
//
// libcontainer starts each container by re-executing the current binary
// ("<argv0> init"); this package's own init function recognises that and
// runs the container's init, so importing the package is all a binary or a
// test binary needs. The dispatch sits in this package rather than in main
// so that a container init skips the initialisers of the packages Go
// initialises after it (see init_linux.go).
//
// # Rootless
//
// An ordinary user's agent calls [EnterUserNamespace] first thing: the
// binary is started again in new user, mount and pid namespaces whose id
// maps newuidmap and newgidmap write from /etc/subuid and /etc/subgid
// (namespace id 0 is the user, ids 1-65536 its subordinate ids), and goes
// on there as root of its namespace. [New] in a user namespace other than
// the host's is rootless mode ([InUserNamespace]): the runs' containers
// map container ids 0-65535 to namespace ids 1-65536 (container root is a
// subordinate id, never the user); their lowers must be shifted by 1
// ([LowerShift]: a host file system cannot be idmapped from a user
// namespace), which Run checks; overlays keep their attributes in
// user.overlay.* (userxattr); the runs' root filesystems are mounted in a
// tmpfs of the agent's own mount namespace on a directory of /tmp, whose
// path a subordinate id can search; cgroup limits apply when the agent's
// cgroup v2 is delegated to it ([CgroupDelegated]) and are refused with
// [ErrLimitUnavailable] otherwise ([Manager.Unlimited] says why runs get
// none); the isolated network is the agent's as in rootful mode. The agent
// is its pid namespace's init and dies with its parent: a SIGKILL takes
// every build with it, and the next Manager removes the dead instance's
// files. A rootless Manager is one more instance of its data directory; a
// rootless and a root Manager refuse each other there ([ErrIDRangeInUse]).
// [CheckHost] of an ordinary user names what rootless mode lacks, each
// with its fix. See docs/rootless.md.
//
// # Host requirements
//
// Linux ≥ 5.19 (overlayfs over idmapped lower layers), user namespaces,
// overlayfs, cgroup v1 or v2 with the memory, pids and cpu controllers, a
// data directory on a filesystem that supports idmapped mounts (ext4, xfs,
// btrfs, tmpfs…), and for the isolated network network namespaces, pasta
// and /dev/net/tun. [CheckHost] reports each requirement, runs a container
// with limits to read them back from inside and makes an isolated network
// ([Manager.CheckNetwork] does that alone). Rootless mode needs Linux ≥
// 5.11 (overlayfs in a user namespace; no idmapped mounts), subordinate
// ids, newuidmap and newgidmap, unprivileged user namespaces, and a
// /dev/net/tun every user may open (docs/rootless.md).
package sandbox
