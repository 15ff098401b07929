package sandbox

// The system call lists of the seccomp filter (seccomp_linux.go builds the
// filter from them; docs/security.md explains the choices).

// dockerAllowed is the unconditional allow-list of Docker's default seccomp
// profile: the names of the first rule (SCMP_ACT_ALLOW, no conditions) of
// seccomp/default.json in github.com/moby/profiles at tag seccomp/v0.2.3
// (commit 836ae4d, May 2026), copied verbatim and in its order. To follow a
// newer profile, replace the list and the tag above, then run
// TestSeccompDecidesEverySyscall and the job package's TestHostileBuilds.
// The filter allows these names except those of refusedEPERM and
// refusedENOSYS.
var dockerAllowed = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
	"capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
	"clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
	"clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
	"dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
	"exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
	"fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
	"fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
	"fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
	"ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
	"futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32",
	"geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
	"getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
	"getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid",
	"getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32",
	"getxattr", "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1",
	"inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
	"io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill",
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
	"lgetxattr", "link", "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr",
	"_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
	"map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat",
	"mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr",
	"mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
	"mq_timedsend_time64", "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd",
	"msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat",
	"_newselect", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe",
	"pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
	"pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64",
	"pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
	"recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
	"removexattrat", "rename", "renameat", "renameat2", "restart_syscall", "riscv_hwprobe", "rmdir",
	"rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
	"rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
	"sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
	"sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
	"sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
	"sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
	"semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
	"sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
	"setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid",
	"setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
	"set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid",
	"setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
	"sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair",
	"splice", "stat", "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat",
	"sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
	"timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
	"timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
	"timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname",
	"unlink", "unlinkat", "uretprobe", "utime", "utimensat", "utimensat_time64", "utimes", "vfork",
	"vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
}

// archAllowed are the names Docker's profile allows per architecture
// (its rules with includes.arches) for the architectures seccompArchs covers.
var archAllowed = map[string][]string{
	"amd64": {"arch_prctl", "modify_ldt"},
	"arm64": {"arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"},
}

// capAllowed are the names Docker's profile allows only with a capability
// that the sandbox grants container root (config_linux.go's dockerCaps):
// CAP_SYS_CHROOT's chroot, which pacman needs for install scriptlets. The
// kernel still refuses it to users without the capability.
var capAllowed = []string{"chroot"}

// refusedEPERM are refused with EPERM, what the kernel answers a caller that
// lacks a privilege: Docker's profile refuses all of them to a container
// with Docker's default capabilities, except where a comment says vagent is
// stricter.
var refusedEPERM = []string{
	// filesystems and mounts (Docker: CAP_SYS_ADMIN); name_to_handle_at is
	// allowed by Docker since 2024, refused here as before
	"mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
	"move_mount", "open_tree", "open_tree_attr", "mount_setattr", "swapon", "swapoff",
	"quotactl", "quotactl_fd", "name_to_handle_at", "open_by_handle_at",
	// kernel code and the machine
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "bpf",
	"perf_event_open", "reboot", "acct", "syslog", "lookup_dcookie", "iopl", "ioperm",
	"vm86", "vm86old", "vhangup", "fanotify_init", "pciconfig_iobase", "pciconfig_read",
	"pciconfig_write",
	// the clock (Docker allows reading it through clock_adjtime; vagent
	// refuses the call as before)
	"settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64",
	// keyrings
	"add_key", "request_key", "keyctl",
	// other processes and namespaces (Docker allows process_vm_* on
	// kernels ≥ 4.8; vagent refuses them as before)
	"setns", "unshare", "sethostname", "setdomainname", "process_vm_readv",
	"process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp", "userfaultfd",
	// io_uring: a large kernel attack surface whose operations bypass the
	// per-syscall filter
	"io_uring_setup", "io_uring_enter", "io_uring_register",
}

// refusedENOSYS are refused with ENOSYS, the filter's default: what a
// kernel without them answers, so that callers fall back. The filter needs
// no rule for them; they are listed so that every system call is decided
// (TestSeccompDecidesEverySyscall) and stays refused when a newer
// libseccomp learns its name.
var refusedENOSYS = []string{
	// clone3's flags are behind a pointer the filter cannot read; libc
	// falls back to clone (Docker does the same)
	"clone3",
	// new interfaces builds do not need: mount listings (util-linux falls
	// back to /proc/self/mountinfo) and memory sealing, which Docker's
	// profile allows since 2024 (vagent is stricter); LSM attributes
	// (Docker: CAP_SYS_ADMIN); inode attributes by path (Linux 6.17)
	"listmount", "statmount", "mseal", "lsm_get_self_attr", "lsm_set_self_attr",
	"lsm_list_modules", "file_getattr", "file_setattr",
	// NUMA memory policy (Docker: CAP_SYS_NICE); libnuma reports NUMA as
	// unavailable on ENOSYS
	"get_mempolicy", "set_mempolicy", "mbind", "set_mempolicy_home_node", "migrate_pages",
	"move_pages",
	// removed or never implemented
	"_sysctl", "afs_syscall", "bdflush", "break", "create_module", "ftime", "get_kernel_syms",
	"getpmsg", "gtty", "idle", "lock", "mpx", "nfsservctl", "prof", "profil", "putpmsg",
	"query_module", "security", "stty", "sysfs", "tuxcall", "uselib", "ustat", "vserver",
	// x86's pre-POSIX calls that 32-bit libcs of this century do not use
	"nice", "oldfstat", "oldlstat", "oldolduname", "oldstat", "olduname", "readdir",
	"sgetmask", "sigaction", "signal", "sigpending", "sigsuspend", "ssetmask", "ulimit",
}
