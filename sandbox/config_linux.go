package sandbox

import (
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/opencontainers/cgroups"
	devcfg "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// dockerCaps is Docker's default capability set.
var dockerCaps = []string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
	"CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
}

// Docker's masked and read-only paths.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
		"/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

func charDev(p string, major, minor int64) *devcfg.Device {
	return &devcfg.Device{
		Path:     p,
		FileMode: 0o666,
		Rule:     devcfg.Rule{Type: devcfg.CharDevice, Major: major, Minor: minor, Permissions: "rwm", Allow: true},
	}
}

// devices are the device nodes of the minimal /dev (bind-mounted from the
// host in a user namespace, where mknod is not allowed).
var devices = []*devcfg.Device{
	charDev("/dev/null", 1, 3), charDev("/dev/zero", 1, 5), charDev("/dev/full", 1, 7),
	charDev("/dev/random", 1, 8), charDev("/dev/urandom", 1, 9), charDev("/dev/tty", 5, 0),
}

// deviceRules allow the devices above plus ptmx and the pty slaves.
func deviceRules() []*devcfg.Rule {
	rules := make([]*devcfg.Rule, 0, len(devices)+2)
	for _, d := range devices {
		r := d.Rule
		rules = append(rules, &r)
	}
	return append(rules,
		&devcfg.Rule{Type: devcfg.CharDevice, Major: 5, Minor: 2, Permissions: "rwm", Allow: true},
		&devcfg.Rule{Type: devcfg.CharDevice, Major: 136, Minor: devcfg.Wildcard, Permissions: "rwm", Allow: true},
	)
}

const baseMountFlags = unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV

// containerConfig builds the libcontainer configuration of one run.
func (m *Manager) containerConfig(spec *Spec, dirs runDirs, id, rootfs string, limits Limits) *configs.Config {
	hostname := spec.Hostname
	if hostname == "" {
		hostname = "vagent"
	}
	c := &configs.Config{
		Rootfs:   rootfs,
		Hostname: hostname,
		Namespaces: configs.Namespaces{
			{Type: configs.NEWNS}, {Type: configs.NEWPID}, {Type: configs.NEWIPC}, {Type: configs.NEWUTS},
		},
		Capabilities:  &configs.Capabilities{Bounding: dockerCaps},
		Devices:       devices,
		MaskPaths:     maskedPaths,
		ReadonlyPaths: readonlyPaths,
		Rlimits:       rlimits(limits),
		Cgroups: &cgroups.Cgroup{
			Path:      path.Join(m.cg.parent, id),
			Resources: resources(limits, m.cg.v2, m.cg.swap),
		},
		Mounts: []*configs.Mount{
			{Source: "proc", Destination: "/proc", Device: "proc", Flags: baseMountFlags},
			{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755,size=65536k"},
			{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
			{Source: "shm", Destination: "/dev/shm", Device: "tmpfs", Flags: baseMountFlags, Data: "mode=1777,size=65536k"},
			{Source: "mqueue", Destination: "/dev/mqueue", Device: "mqueue", Flags: baseMountFlags},
			// Mounting a new sysfs needs the network namespace's owner: bind
			// the host's, read-only all the way down (the kernel refuses a
			// non-recursive bind that would uncover what its submounts hide).
			{Source: "/sys", Destination: "/sys", Device: "bind", Flags: unix.MS_BIND | unix.MS_REC | baseMountFlags | unix.MS_RDONLY,
				RecAttr: &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}},
			{Source: "tmpfs", Destination: "/tmp", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777,size=" + strconv.FormatInt(m.opts.tmpSize, 10)},
		},
	}
	if spec.ReadOnly {
		c.Readonlyfs = true
	}
	if m.opts.userns {
		c.Namespaces = append(c.Namespaces, configs.Namespace{Type: configs.NEWUSER})
		c.UIDMappings = []configs.IDMap{{ContainerID: 0, HostID: int64(m.rootUID), Size: int64(m.idSize)}}
		c.GIDMappings = []configs.IDMap{{ContainerID: 0, HostID: int64(m.rootGID), Size: int64(m.idSize)}}
	}
	if m.cg.undelegated {
		// A rootless agent without a delegated cgroup: libcontainer
		// tolerates cgroups it cannot create only without a path, and no
		// limit was allowed (checkLimits).
		c.RootlessCgroups = true
		c.Cgroups.Path, c.Cgroups.Parent, c.Cgroups.Name = "", m.opts.cgroupParent, id
		c.Cgroups.Rootless = true
	}
	if spec.UID == 0 {
		c.Capabilities.Effective = dockerCaps
		c.Capabilities.Permitted = dockerCaps
	}
	switch spec.Network {
	case NetworkNone:
		c.Namespaces = append(c.Namespaces, configs.Namespace{Type: configs.NEWNET})
		c.Networks = []*configs.Network{{Type: "loopback", Address: "127.0.0.1/0", Gateway: "localhost"}}
		// As in an isolated run's namespace (nsSysctls): any user binds
		// any port and pings (the groups are the container's, which owns
		// this namespace).
		c.Sysctl = map[string]string{
			"net.ipv4.ip_unprivileged_port_start": "0",
			"net.ipv4.ping_group_range":           "0 " + strconv.FormatUint(uint64(m.idSize)-1, 10),
		}
	case NetworkIsolated:
		// The namespace the Manager made (setupNetwork): joined, so that
		// it stays the agent's and container root has no privilege in it.
		c.Namespaces = append(c.Namespaces, configs.Namespace{Type: configs.NEWNET, Path: dirs.netns})
		m.bindEtc(c, spec, map[string]string{"/etc/resolv.conf": filepath.Join(dirs.base, resolvFile), "/etc/hosts": "/etc/hosts"})
	default:
		m.bindEtc(c, spec, map[string]string{"/etc/resolv.conf": "/etc/resolv.conf", "/etc/hosts": "/etc/hosts"})
	}
	for _, mnt := range spec.Mounts {
		cm := &configs.Mount{
			Source: mnt.Source, Destination: path.Clean(mnt.Target), Device: "bind",
			Flags: unix.MS_BIND | unix.MS_REC | unix.MS_NOSUID | unix.MS_NODEV,
		}
		if mnt.ReadOnly {
			cm.Flags |= unix.MS_RDONLY
			cm.RecAttr = &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		}
		// Rootless, a host file system cannot be idmapped: the mount shows
		// the user's files owned by nobody, as host root's are shown in
		// rootful mode without the mapping.
		if mnt.IDMapped && m.opts.userns && !m.rootless {
			cm.IDMapping = &configs.MountIDMapping{
				UIDMappings: c.UIDMappings, GIDMappings: c.GIDMappings, Recursive: true,
			}
		}
		c.Mounts = append(c.Mounts, cm)
	}
	if m.opts.seccomp {
		c.Seccomp = seccompProfile()
	}
	return c
}

// bindEtc bind-mounts, read-only, host files (targets → sources) over the
// container's /etc files: only regular files, and only where a mount point
// exists or can be made.
func (m *Manager) bindEtc(c *configs.Config, spec *Spec, files map[string]string) {
	for _, f := range []string{"/etc/resolv.conf", "/etc/hosts"} {
		src, ok := files[f]
		if !ok {
			continue
		}
		if spec.ReadOnly && !isRegular(filepath.Join(spec.Lower, f)) {
			continue // no mount point can be made
		}
		if fi, err := os.Stat(src); err != nil || !fi.Mode().IsRegular() {
			continue // a host without it (a minimal VM or container)
		}
		c.Mounts = append(c.Mounts, &configs.Mount{
			Source: src, Destination: f, Device: "bind",
			Flags: unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC,
		})
	}
}

// resources converts Limits to cgroup resources.
func resources(l Limits, v2, swap bool) *cgroups.Resources {
	r := &cgroups.Resources{Devices: deviceRules()}
	if l.Memory > 0 {
		r.Memory = l.Memory
		// Without swap accounting (cgroup v1 booted without it) only the
		// memory limit applies.
		if swap {
			r.MemorySwap = l.MemorySwap
			if r.MemorySwap == 0 {
				r.MemorySwap = l.Memory
			}
		}
	}
	if l.Pids > 0 {
		p := l.Pids
		r.PidsLimit = &p
	}
	if l.CPUWeight > 0 {
		if v2 {
			r.CpuWeight = l.CPUWeight
		} else {
			r.CpuShares = weightToShares(l.CPUWeight)
		}
	}
	if l.CPUQuota > 0 {
		r.CpuPeriod = 100000
		r.CpuQuota = int64(l.CPUQuota * 100000)
	}
	return r
}

// weightToShares inverts cgroups.ConvertCPUSharesToCgroupV2Value (which
// maps the default 1024 shares to the default weight 100): the smallest
// share count, 2-262144, whose weight is at least w.
func weightToShares(w uint64) uint64 {
	lo, hi := uint64(2), uint64(262144)
	for lo < hi {
		mid := (lo + hi) / 2
		if cgroups.ConvertCPUSharesToCgroupV2Value(mid) < w {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// rlimits are the resource limits of a run's processes: the open files
// limit, and with a disk limit the largest file (RLIMIT_FSIZE, see
// disk_linux.go).
func rlimits(l Limits) []configs.Rlimit {
	out := []configs.Rlimit{nofileRlimit()}
	if l.Disk > 0 {
		n := uint64(l.Disk)
		var cur unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &cur); err == nil {
			n = min(n, cur.Max) // raising it needs CAP_SYS_RESOURCE
		}
		out = append(out, configs.Rlimit{Type: unix.RLIMIT_FSIZE, Hard: n, Soft: n})
	}
	return out
}

// nofileRlimit raises the open files limit as far as the agent may.
func nofileRlimit() configs.Rlimit {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		r.Max = 1024
	}
	n := min(r.Max, uint64(1<<20))
	return configs.Rlimit{Type: unix.RLIMIT_NOFILE, Hard: n, Soft: n}
}

// seccompArchs are the architectures a filter covers (the native one and the
// compat ones a process could switch to).
func seccompArchs() []string {
	switch runtime.GOARCH {
	case "amd64":
		return []string{"amd64", "x86"}
	case "arm64":
		return []string{"arm64", "arm"}
	}
	return nil
}

func isRegular(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}
