package sandbox

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// verdict is what a filter answers a call: 0 for allowed, else the errno.
type verdict = unix.Errno

// filterAnswer answers a call of name with first argument arg0 as libseccomp
// compiles p: an unconditional rule decides alone, otherwise the matching
// conditional rule, otherwise the default action. It fails t when the
// profile has rules libseccomp would merge differently (an unconditional
// rule beside conditional ones, or two matching rules that disagree).
func filterAnswer(t *testing.T, p *configs.Seccomp, name string, arg0 uint64) verdict {
	t.Helper()
	answer := func(a configs.Action, ret *uint) verdict {
		switch a {
		case configs.Allow:
			return 0
		case configs.Errno:
			return unix.Errno(*ret)
		}
		t.Fatalf("%s: action %v", name, a)
		return 0
	}
	var uncond, cond []*configs.Syscall
	for _, s := range p.Syscalls {
		if s.Name != name {
			continue
		}
		if len(s.Args) == 0 {
			uncond = append(uncond, s)
		} else {
			cond = append(cond, s)
		}
	}
	if len(uncond) > 0 {
		if len(uncond) > 1 || len(cond) > 0 {
			t.Fatalf("%s has %d unconditional and %d conditional rules", name, len(uncond), len(cond))
		}
		return answer(uncond[0].Action, uncond[0].ErrnoRet)
	}
	got, matched := verdict(0), false
	for _, s := range cond {
		if len(s.Args) != 1 || s.Args[0].Index != 0 {
			t.Fatalf("%s: a rule with conditions %+v", name, s.Args)
		}
		a := s.Args[0]
		var m bool
		switch a.Op {
		case configs.EqualTo:
			m = arg0 == a.Value
		case configs.LessThan:
			m = arg0 < a.Value
		case configs.GreaterThan:
			m = arg0 > a.Value
		case configs.MaskEqualTo:
			m = arg0&a.Value == a.ValueTwo
		default:
			t.Fatalf("%s: operator %v", name, a.Op)
		}
		if !m {
			continue
		}
		v := answer(s.Action, s.ErrnoRet)
		if matched && v != got {
			t.Fatalf("%s(%#x): rules disagree: %v and %v", name, arg0, got, v)
		}
		got, matched = v, true
	}
	if matched {
		return got
	}
	return answer(p.DefaultAction, p.DefaultErrnoRet)
}

func TestSeccompProfileDecisions(t *testing.T) {
	p := seccompProfile()
	if p.DefaultAction != configs.Errno || p.DefaultErrnoRet == nil || *p.DefaultErrnoRet != uint(unix.ENOSYS) {
		t.Fatalf("default action %v, errno %v: want ENOSYS", p.DefaultAction, p.DefaultErrnoRet)
	}
	for _, tc := range []struct {
		name string
		arg0 uint64
		want verdict
	}{
		{"read", 0, 0}, {"execve", 0, 0}, {"fchmodat2", 0, 0}, {"landlock_create_ruleset", 0, 0},
		{"seccomp", 0, 0}, {"msgget", 0, 0}, {"chroot", 0, 0}, {"arch_prctl", 0, 0},
		{"mount", 0, unix.EPERM}, {"unshare", 0, unix.EPERM}, {"setns", 0, unix.EPERM},
		{"keyctl", 0, unix.EPERM}, {"bpf", 0, unix.EPERM}, {"io_uring_setup", 0, unix.EPERM},
		{"name_to_handle_at", 0, unix.EPERM}, {"process_vm_readv", 0, unix.EPERM},
		{"clock_adjtime", 0, unix.EPERM},
		{"clone3", 0, unix.ENOSYS}, {"listmount", 0, unix.ENOSYS}, {"statmount", 0, unix.ENOSYS},
		{"mseal", 0, unix.ENOSYS}, {"mbind", 0, unix.ENOSYS}, {"no_such_call", 0, unix.ENOSYS},
		// clone: fork, threads and pidfds, never a namespace
		{"clone", uint64(unix.SIGCHLD), 0},
		{"clone", unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID, 0},
		{"clone", unix.CLONE_VM | unix.CLONE_VFORK | unix.CLONE_PIDFD | uint64(unix.SIGCHLD), 0},
		{"clone", unix.CLONE_NEWUSER | uint64(unix.SIGCHLD), unix.EPERM},
		{"clone", unix.CLONE_NEWNS, unix.EPERM}, {"clone", unix.CLONE_NEWNET, unix.EPERM},
		{"clone", unix.CLONE_NEWPID, unix.EPERM}, {"clone", unix.CLONE_NEWIPC, unix.EPERM},
		{"clone", unix.CLONE_NEWUTS, unix.EPERM}, {"clone", unix.CLONE_NEWCGROUP, unix.EPERM},
		{"clone", 1<<32 | unix.CLONE_NEWUSER, unix.EPERM},
		// personality: Docker's values only
		{"personality", 0, 0}, {"personality", 8, 0}, {"personality", 0x20008, 0}, {"personality", math.MaxUint32, 0},
		{"personality", 0x0040000, unix.ENOSYS}, {"personality", 0x0400000, unix.ENOSYS},
		{"personality", 1<<32 | 8, unix.ENOSYS},
		// socket: no AF_ALG, no AF_VSOCK, whatever the high bits say
		{"socket", unix.AF_UNIX, 0}, {"socket", unix.AF_INET, 0}, {"socket", unix.AF_INET6, 0},
		{"socket", unix.AF_NETLINK, 0}, {"socket", unix.AF_PACKET, 0}, {"socket", unix.AF_NFC, 0},
		{"socket", unix.AF_KCM, 0}, {"socket", unix.AF_XDP, 0}, {"socket", unix.AF_MCTP, 0},
		{"socket", unix.AF_ALG, unix.ENOSYS}, {"socket", unix.AF_VSOCK, unix.ENOSYS},
		{"socket", 1<<32 | unix.AF_ALG, unix.ENOSYS}, {"socket", 1<<32 | unix.AF_VSOCK, unix.ENOSYS},
		{"socket", unix.AF_MCTP + 1, unix.ENOSYS}, {"socket", math.MaxUint64, unix.ENOSYS},
		// ptrace: no attaching
		{"ptrace", unix.PTRACE_TRACEME, 0}, {"ptrace", unix.PTRACE_PEEKDATA, 0}, {"ptrace", unix.PTRACE_CONT, 0},
		{"ptrace", unix.PTRACE_DETACH, 0}, {"ptrace", unix.PTRACE_SETOPTIONS, 0}, {"ptrace", unix.PTRACE_INTERRUPT, 0},
		{"ptrace", unix.PTRACE_ATTACH, unix.EPERM}, {"ptrace", unix.PTRACE_SEIZE, unix.EPERM},
		{"ptrace", 1<<32 | unix.PTRACE_ATTACH, 0},
	} {
		if got := filterAnswer(t, p, tc.name, tc.arg0); got != tc.want {
			t.Errorf("%s(%#x) = %v, want %v", tc.name, tc.arg0, got, tc.want)
		}
	}
}

// TestArgNotIn checks the blocks of argNotIn against every value around
// the refused ones and at the ends of the range.
func TestArgNotIn(t *testing.T) {
	for _, refused := range [][]uint64{
		{unix.PTRACE_ATTACH, unix.PTRACE_SEIZE}, {0}, {math.MaxUint64}, {0, 1, 2, 7, 8, 1 << 40, math.MaxUint64 - 1},
		{5}, {1 << 63},
	} {
		t.Run(fmt.Sprint(refused), func(t *testing.T) {
			p := &configs.Seccomp{DefaultAction: configs.Errno, DefaultErrnoRet: ptr(uint(unix.ENOSYS))}
			for _, a := range argNotIn(0, refused...) {
				p.Syscalls = append(p.Syscalls, &configs.Syscall{Name: "x", Action: configs.Allow, Args: []*configs.Arg{a}})
			}
			values := []uint64{0, 1, 2, 3, math.MaxUint64, math.MaxUint64 - 1, 1 << 32, 1<<32 + 16, 1 << 63, 1<<63 - 1}
			for _, r := range refused {
				values = append(values, r-2, r-1, r, r+1, r+2, r^1<<32)
			}
			for v := uint64(0); v < 0x4300; v++ {
				values = append(values, v)
			}
			for _, v := range values {
				want := verdict(0)
				if slices.Contains(refused, v) {
					want = unix.ENOSYS
				}
				if got := filterAnswer(t, p, "x", v); got != want {
					t.Fatalf("%#x: %v, want %v", v, got, want)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestSeccompLists: no name is refused twice or both allowed by a
// condition and refused, and what is stricter than Docker's profile is
// what docs/security.md says.
func TestSeccompLists(t *testing.T) {
	seen := map[string]string{}
	for list, names := range map[string][]string{"refusedEPERM": refusedEPERM, "refusedENOSYS": refusedENOSYS, "capAllowed": capAllowed, "dockerAllowed": dockerAllowed} {
		for _, n := range names {
			if other, ok := seen[n]; ok && (list == "dockerAllowed") == (other == "dockerAllowed") {
				t.Errorf("%s is in %s and %s", n, list, other)
			}
			if list != "dockerAllowed" {
				seen[n] = list
			}
		}
	}
	for _, n := range []string{"clone", "personality", "socket", "ptrace"} {
		if _, ok := seen[n]; ok || slices.Contains(dockerAllowed, n) {
			t.Errorf("%s has conditions but is listed", n)
		}
	}
	var stricter []string
	for _, n := range dockerAllowed {
		if _, ok := seen[n]; ok {
			stricter = append(stricter, n)
		}
	}
	slices.Sort(stricter)
	want := []string{"clock_adjtime", "clock_adjtime64", "listmount", "mseal", "name_to_handle_at", "statmount"}
	if !slices.Equal(stricter, want) {
		t.Errorf("Docker allows and vagent refuses %v, want %v (update docs/security.md)", stricter, want)
	}
}
