package sandbox

import (
	"math"
	"runtime"
	"slices"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// seccompProfile is the filter of every run, an allow-list after Docker's
// default profile (seccomp_syscalls.go holds the lists and their source):
//
//   - the calls of dockerAllowed, archAllowed and capAllowed are allowed,
//     except those refusedEPERM and refusedENOSYS name;
//   - refusedEPERM's get EPERM;
//   - everything else gets ENOSYS: refusedENOSYS's, and every system call
//     the lists do not name, which includes every call newer than the
//     libseccomp linked in (it cannot name them), so a newer kernel never
//     widens the filter and libc falls back as on an older kernel;
//   - Docker's conditional rules that fit the sandbox's capabilities:
//     clone without namespace flags (with one, EPERM), personality with the
//     values Docker allows, socket with every address family but AF_ALG
//     and AF_VSOCK, and ptrace with every request but PTRACE_ATTACH and
//     PTRACE_SEIZE, which get EPERM (PTRACE_TRACEME stays, so strace and
//     test suites can trace their own children; Docker allows attaching).
//
// Rules with conditions compare the whole 64-bit register, as libseccomp
// does: socket's rules name each allowed family, so that a family with high
// bits set (which the kernel truncates to an int) is refused, not taken for
// a family above AF_VSOCK as Docker's "greater than 40" rule takes it.
func seccompProfile() *configs.Seccomp {
	enosys, eperm := uint(unix.ENOSYS), uint(unix.EPERM)
	s := &configs.Seccomp{
		DefaultAction:   configs.Errno,
		DefaultErrnoRet: &enosys,
		Architectures:   seccompArchs(),
	}
	add := func(name string, action configs.Action, args ...*configs.Arg) {
		c := &configs.Syscall{Name: name, Action: action, Args: args}
		if action == configs.Errno {
			c.ErrnoRet = &eperm
		}
		s.Syscalls = append(s.Syscalls, c)
	}
	for _, name := range allowedSyscalls(runtime.GOARCH) {
		add(name, configs.Allow)
	}
	for _, name := range refusedEPERM {
		add(name, configs.Errno)
	}
	// clone: only without namespace flags (flags are its first argument
	// on every architecture vagent supports, unlike s390).
	add("clone", configs.Allow, &configs.Arg{Index: 0, Value: cloneNamespaceFlags, ValueTwo: 0, Op: configs.MaskEqualTo})
	for f := uint64(1); f != 0; f <<= 1 {
		if cloneNamespaceFlags&f != 0 {
			add("clone", configs.Errno, &configs.Arg{Index: 0, Value: f, ValueTwo: f, Op: configs.MaskEqualTo})
		}
	}
	for _, v := range personalityAllowed {
		add("personality", configs.Allow, &configs.Arg{Index: 0, Value: v, Op: configs.EqualTo})
	}
	for _, a := range socketFamilyArgs() {
		add("socket", configs.Allow, a)
	}
	ptraceRefused := []uint64{unix.PTRACE_ATTACH, unix.PTRACE_SEIZE}
	for _, a := range argNotIn(0, ptraceRefused...) {
		add("ptrace", configs.Allow, a)
	}
	for _, r := range ptraceRefused {
		add("ptrace", configs.Errno, &configs.Arg{Index: 0, Value: r, Op: configs.EqualTo})
	}
	return s
}

// allowedSyscalls are the names allowed without conditions on goarch.
func allowedSyscalls(goarch string) []string {
	var names []string
	for _, list := range [][]string{dockerAllowed, archAllowed[goarch], capAllowed} {
		for _, name := range list {
			if !slices.Contains(refusedEPERM, name) && !slices.Contains(refusedENOSYS, name) {
				names = append(names, name)
			}
		}
	}
	return names
}

// cloneNamespaceFlags are the clone flags that make namespaces (Docker's
// mask 0x7E020000): a build makes none, a user namespace above all, whose
// root would have every capability over its mounts.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// personalityAllowed are the personality values Docker allows: PER_LINUX,
// PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and the query 0xffffffff.
// Flags such as ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC are refused.
var personalityAllowed = []uint64{0, 8, 0x20000, 0x20008, math.MaxUint32}

// Address families refused by socket: AF_ALG (the kernel's crypto API) and
// AF_VSOCK (the host side of virtual machines), as in Docker's profile.
// The families above AF_VSOCK that Docker allows end at lastSocketFamily
// (AF_MCTP); a newer family is refused until it is added.
const (
	afALG            = 38
	afVSOCK          = 40
	lastSocketFamily = 45
)

// socketFamilyArgs are the conditions, one per rule, that allow a socket
// family: below AF_ALG, between AF_ALG and AF_VSOCK, and above AF_VSOCK up
// to lastSocketFamily.
func socketFamilyArgs() []*configs.Arg {
	args := []*configs.Arg{{Index: 0, Value: afALG, Op: configs.LessThan}}
	for f := uint64(afALG + 1); f <= lastSocketFamily; f++ {
		if f != afVSOCK {
			args = append(args, &configs.Arg{Index: 0, Value: f, Op: configs.EqualTo})
		}
	}
	return args
}

// argNotIn returns conditions, one per rule, that together match exactly
// the values of argument index that are not among refused: libseccomp
// cannot combine two comparisons of one argument in a rule, nor let a
// conditional refusal override an unconditional allow. The ranges between
// the refused values become aligned power-of-two blocks (masked equality).
func argNotIn(index uint, refused ...uint64) []*configs.Arg {
	refused = slices.Clone(refused)
	slices.Sort(refused)
	refused = slices.Compact(refused)
	var args []*configs.Arg
	lo := uint64(0)
	for i, r := range refused {
		if i == 0 {
			if r > 0 {
				args = append(args, &configs.Arg{Index: index, Value: r, Op: configs.LessThan})
			}
		} else if lo < r {
			args = append(args, rangeArgs(index, lo, r-1)...)
		}
		lo = r + 1
	}
	if n := len(refused); n > 0 && refused[n-1] < math.MaxUint64 {
		args = append(args, &configs.Arg{Index: index, Value: refused[n-1], Op: configs.GreaterThan})
	}
	return args
}

// rangeArgs matches lo..hi (inclusive, lo ≤ hi) with masked equalities, one
// block each: the largest aligned power of two that starts at lo and fits.
func rangeArgs(index uint, lo, hi uint64) []*configs.Arg {
	var args []*configs.Arg
	for {
		size := uint64(1)
		for size*2 != 0 && lo&(size*2-1) == 0 && hi-lo >= size*2-1 {
			size *= 2
		}
		args = append(args, &configs.Arg{Index: index, Value: ^(size - 1), ValueTwo: lo, Op: configs.MaskEqualTo})
		if hi-lo == size-1 {
			return args
		}
		lo += size
	}
}
