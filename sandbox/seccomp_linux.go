package sandbox

import (
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// blockedSyscalls are refused with EPERM: what a package build never needs
// and what would widen the kernel's attack surface, after Docker's default
// profile (which blocks these unless the container has extra capabilities).
var blockedSyscalls = []string{
	// filesystems and mounts
	"mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount",
	"fspick", "move_mount", "open_tree", "mount_setattr", "swapon", "swapoff",
	"quotactl", "quotactl_fd", "name_to_handle_at", "open_by_handle_at",
	"nfsservctl", "sysfs", "ustat", "_sysctl", "uselib",
	// kernel code and the machine itself
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"create_module", "get_kernel_syms", "query_module", "bpf", "perf_event_open",
	"reboot", "acct", "syslog", "lookup_dcookie", "iopl", "ioperm", "vm86", "vm86old",
	"settimeofday", "stime", "clock_settime", "clock_adjtime",
	// keyrings
	"add_key", "request_key", "keyctl",
	// other processes and namespaces
	"setns", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
	"userfaultfd",
	// io_uring: a large kernel attack surface whose operations bypass the
	// per-syscall filter (Docker's profile blocks it too)
	"io_uring_setup", "io_uring_enter", "io_uring_register",
}

// seccompProfile is the filter of every run: allow by default, block the
// syscalls above, ptrace attaching to other processes (PTRACE_TRACEME stays
// allowed so a debugger or strace can start its own child), and new user
// namespaces through unshare or clone. clone3 gets ENOSYS as in Docker's
// profile, since its flags cannot be inspected: libc then falls back to clone.
func seccompProfile() *configs.Seccomp {
	eperm, enosys := uint(unix.EPERM), uint(unix.ENOSYS)
	s := &configs.Seccomp{
		DefaultAction: configs.Allow,
		Architectures: seccompArchs(),
	}
	for _, name := range blockedSyscalls {
		s.Syscalls = append(s.Syscalls, &configs.Syscall{Name: name, Action: configs.Errno, ErrnoRet: &eperm})
	}
	for _, req := range []uint64{unix.PTRACE_ATTACH, unix.PTRACE_SEIZE} {
		s.Syscalls = append(s.Syscalls, &configs.Syscall{
			Name: "ptrace", Action: configs.Errno, ErrnoRet: &eperm,
			Args: []*configs.Arg{{Index: 0, Value: req, Op: configs.EqualTo}},
		})
	}
	for _, name := range []string{"unshare", "clone"} {
		s.Syscalls = append(s.Syscalls, &configs.Syscall{
			Name: name, Action: configs.Errno, ErrnoRet: &eperm,
			Args: []*configs.Arg{{Index: 0, Value: unix.CLONE_NEWUSER, ValueTwo: unix.CLONE_NEWUSER, Op: configs.MaskEqualTo}},
		})
	}
	s.Syscalls = append(s.Syscalls, &configs.Syscall{Name: "clone3", Action: configs.Errno, ErrnoRet: &enosys})
	return s
}
