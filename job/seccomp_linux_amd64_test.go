package job_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

// A perl argument of a probe: an integer (passed as a long), a string
// (passed as a pointer to it) or a zeroed buffer of n bytes.
type (
	str string
	buf int
)

// syscallProbe is one raw system call a build makes, and the errno the
// filter answers (as builder and as root: Docker's capability set has
// nothing that would let root through).
type syscallProbe struct {
	name string
	nr   int
	args []any
	want unix.Errno
}

// notAPid is above the kernel's pid_max: without the filter, calls on it
// fail with ESRCH, not the filter's errno.
const notAPid = 1 << 23

// deniedProbes are system calls Docker's default profile refuses to a
// container with its default capabilities, and the newer ones vagent
// refuses although Docker allows them (listmount, statmount, mseal,
// clock_adjtime, name_to_handle_at, AF_ALG with high bits). Where the
// kernel alone would let the call through, or answer with another errno,
// the comment says so: those rows fail without the filter.
var deniedProbes = []syscallProbe{
	{"mount", unix.SYS_MOUNT, []any{str("none"), str("/tmp"), str("tmpfs"), 0, 0}, unix.EPERM},
	{"umount2", unix.SYS_UMOUNT2, []any{str("/tmp"), 0}, unix.EPERM},
	{"pivot_root", unix.SYS_PIVOT_ROOT, []any{str("/tmp"), str("/tmp")}, unix.EPERM},
	{"fsopen", unix.SYS_FSOPEN, []any{str("tmpfs"), 0}, unix.EPERM},
	{"open_tree", unix.SYS_OPEN_TREE, []any{-100, str("/"), 0}, unix.EPERM},             // kernel: an O_PATH descriptor
	{"move_mount", unix.SYS_MOVE_MOUNT, []any{-1, str(""), -1, str(""), 0}, unix.EPERM}, // kernel: EBADF
	{"mount_setattr", unix.SYS_MOUNT_SETATTR, []any{-1, str(""), 0, 0, 0}, unix.EPERM},
	{"unshare user", unix.SYS_UNSHARE, []any{unix.CLONE_NEWUSER}, unix.EPERM}, // kernel: allowed
	{"unshare mount", unix.SYS_UNSHARE, []any{unix.CLONE_NEWNS}, unix.EPERM},
	{"unshare fs", unix.SYS_UNSHARE, []any{unix.CLONE_FS}, unix.EPERM},                                    // kernel: allowed
	{"clone user", unix.SYS_CLONE, []any{unix.CLONE_NEWUSER | int(unix.SIGCHLD), 0, 0, 0, 0}, unix.EPERM}, // kernel: allowed
	{"clone net", unix.SYS_CLONE, []any{unix.CLONE_NEWNET | int(unix.SIGCHLD), 0, 0, 0, 0}, unix.EPERM},
	{"clone3", unix.SYS_CLONE3, []any{buf(88), 88}, unix.ENOSYS},
	{"setns", unix.SYS_SETNS, []any{0, 0}, unix.EPERM},                                            // kernel: EINVAL
	{"keyctl", unix.SYS_KEYCTL, []any{unix.KEYCTL_GET_KEYRING_ID, -3, 0}, unix.EPERM},             // kernel: allowed
	{"add_key", unix.SYS_ADD_KEY, []any{str("user"), str("vagent"), str("x"), 1, -3}, unix.EPERM}, // kernel: allowed
	{"request_key", unix.SYS_REQUEST_KEY, []any{str("user"), str("vagent"), 0, 0}, unix.EPERM},
	{"bpf", unix.SYS_BPF, []any{0, buf(128), 128}, unix.EPERM},
	{"perf_event_open", unix.SYS_PERF_EVENT_OPEN, []any{buf(128), 0, -1, -1, 0}, unix.EPERM},
	{"userfaultfd", unix.SYS_USERFAULTFD, []any{0}, unix.EPERM},
	{"io_uring_setup", unix.SYS_IO_URING_SETUP, []any{8, buf(120)}, unix.EPERM},
	{"kexec_load", unix.SYS_KEXEC_LOAD, []any{0, 0, 0, 0}, unix.EPERM},
	{"init_module", unix.SYS_INIT_MODULE, []any{0, 0, str("")}, unix.EPERM},
	{"finit_module", unix.SYS_FINIT_MODULE, []any{-1, str(""), 0}, unix.EPERM},
	{"delete_module", unix.SYS_DELETE_MODULE, []any{str("vagent"), 0}, unix.EPERM},
	{"reboot", unix.SYS_REBOOT, []any{0, 0, 0, 0}, unix.EPERM},
	{"swapon", unix.SYS_SWAPON, []any{str("/nonexistent"), 0}, unix.EPERM},
	{"acct", unix.SYS_ACCT, []any{0}, unix.EPERM},
	{"syslog", unix.SYS_SYSLOG, []any{10, 0, 0}, unix.EPERM},
	{"settimeofday", unix.SYS_SETTIMEOFDAY, []any{0, 0}, unix.EPERM}, // kernel: succeeds, changing nothing
	{"clock_settime", unix.SYS_CLOCK_SETTIME, []any{0, 0}, unix.EPERM},
	{"clock_adjtime", unix.SYS_CLOCK_ADJTIME, []any{0, buf(208)}, unix.EPERM}, // kernel: reads the clock
	{"iopl", unix.SYS_IOPL, []any{3}, unix.EPERM},
	{"ioperm", unix.SYS_IOPERM, []any{0, 1, 1}, unix.EPERM},
	{"process_vm_readv", unix.SYS_PROCESS_VM_READV, []any{notAPid, 0, 0, 0, 0, 0}, unix.EPERM}, // kernel: ESRCH
	{"ptrace attach", unix.SYS_PTRACE, []any{unix.PTRACE_ATTACH, notAPid, 0, 0}, unix.EPERM},   // kernel: ESRCH
	{"ptrace seize", unix.SYS_PTRACE, []any{unix.PTRACE_SEIZE, notAPid, 0, 0}, unix.EPERM},
	{"kcmp", unix.SYS_KCMP, []any{notAPid, notAPid, 0, 0, 0}, unix.EPERM},
	{"pidfd_getfd", unix.SYS_PIDFD_GETFD, []any{-1, 0, 0}, unix.EPERM}, // kernel: EBADF
	{"process_madvise", unix.SYS_PROCESS_MADVISE, []any{-1, 0, 0, 0, 0}, unix.EPERM},
	{"name_to_handle_at", unix.SYS_NAME_TO_HANDLE_AT, []any{-100, str("/"), buf(136), buf(4), 0}, unix.EPERM},
	{"open_by_handle_at", unix.SYS_OPEN_BY_HANDLE_AT, []any{-100, buf(16), 0}, unix.EPERM},
	{"quotactl", unix.SYS_QUOTACTL, []any{0, 0, 0, 0}, unix.EPERM},
	{"sethostname", unix.SYS_SETHOSTNAME, []any{str("x"), 1}, unix.EPERM},
	{"vhangup", unix.SYS_VHANGUP, nil, unix.EPERM},
	{"fanotify_init", unix.SYS_FANOTIFY_INIT, []any{0, 0}, unix.EPERM},
	{"personality ADDR_NO_RANDOMIZE", unix.SYS_PERSONALITY, []any{0x0040000}, unix.ENOSYS}, // kernel: allowed
	{"personality READ_IMPLIES_EXEC", unix.SYS_PERSONALITY, []any{0x0400000}, unix.ENOSYS},
	{"socket AF_ALG", unix.SYS_SOCKET, []any{unix.AF_ALG, unix.SOCK_SEQPACKET, 0}, unix.ENOSYS},
	{"socket AF_ALG high bits", unix.SYS_SOCKET, []any{1<<32 | unix.AF_ALG, unix.SOCK_SEQPACKET, 0}, unix.ENOSYS}, // Docker's profile: allowed
	{"socket AF_VSOCK", unix.SYS_SOCKET, []any{unix.AF_VSOCK, unix.SOCK_STREAM, 0}, unix.ENOSYS},
	{"listmount", unix.SYS_LISTMOUNT, []any{buf(32), buf(8), 1, 0}, unix.ENOSYS},     // Docker's profile: allowed
	{"statmount", unix.SYS_STATMOUNT, []any{buf(32), buf(512), 512, 0}, unix.ENOSYS}, // Docker's profile: allowed
	{"mseal", unix.SYS_MSEAL, []any{0, 0, 0}, unix.ENOSYS},                           // Docker's profile: allowed; kernel: 0
	{"set_mempolicy", unix.SYS_SET_MEMPOLICY, []any{0, 0, 0}, unix.ENOSYS},
	{"migrate_pages", unix.SYS_MIGRATE_PAGES, []any{notAPid, 0, 0, 0}, unix.ENOSYS},
	{"ustat", unix.SYS_USTAT, []any{0, buf(32)}, unix.ENOSYS},
	{"file_getattr", unix.SYS_FILE_GETATTR, []any{-100, str("/"), buf(64), 64, 0}, unix.ENOSYS}, // newer than libseccomp
}

// allowedProbes show that the probe can succeed: calls a build needs, with
// their conditions.
var allowedProbes = []struct {
	name string
	nr   int
	args []any
}{
	{"getpid", unix.SYS_GETPID, nil},
	{"personality query", unix.SYS_PERSONALITY, []any{0xffffffff}},
	{"socket AF_UNIX", unix.SYS_SOCKET, []any{unix.AF_UNIX, unix.SOCK_STREAM, 0}},
	{"socket AF_INET", unix.SYS_SOCKET, []any{unix.AF_INET, unix.SOCK_DGRAM, 0}},
	{"clone fork", unix.SYS_CLONE, []any{int(unix.SIGCHLD), 0, 0, 0, 0}},
}

// perlArg is a in perl source: strings and buffers are copied into
// variables, since perl passes a pointer to them.
func perlArg(a any) string {
	switch v := a.(type) {
	case str:
		return strconv.Quote(string(v))
	case buf:
		return fmt.Sprintf(`("\0" x %d)`, int(v))
	default:
		return fmt.Sprint(v)
	}
}

// probeScript is a perl program that makes each probe's raw system call
// and prints "seccomp WHO NAME RESULT ERRNO"; a clone that succeeds exits
// in the child.
func probeScript() string {
	var b strings.Builder
	b.WriteString("use strict;\nmy $who = shift;\nmy @probes = (\n")
	add := func(name string, nr int, args []any) {
		fmt.Fprintf(&b, "\t[%q, %d", name, nr)
		for _, a := range args {
			b.WriteString(", " + perlArg(a))
		}
		b.WriteString("],\n")
	}
	for _, p := range deniedProbes {
		add(p.name, p.nr, p.args)
	}
	for _, p := range allowedProbes {
		add(p.name, p.nr, p.args)
	}
	fmt.Fprintf(&b, `);
for my $p (@probes) {
	my ($name, $nr, @args) = @$p;
	my @a = @args;
	$! = 0;
	my $r = syscall($nr, @a);
	my $e = $r == -1 ? $! + 0 : 0;
	if ($name =~ /^clone/ && $r == 0) { syscall(%d, 0); }
	waitpid($r, 0) if $name =~ /^clone/ && $r > 0;
	print "seccomp $who $name $r $e\n";
}
`, unix.SYS_EXIT_GROUP)
	return b.String()
}

// TestSeccompInBuild runs the probes in a real build, as the builder user
// and as container root (sudo): every denied call fails with the filter's
// errno, every allowed one succeeds, and the build (makepkg, fakeroot,
// pacman) still publishes its package.
func TestSeccompInBuild(t *testing.T) {
	if !sandbox.SeccompSupported {
		t.Skip("built without seccomp support (needs cgo and -tags seccomp, as make test does)")
	}
	e := setup(t)
	script := "\tcat >/tmp/probe.pl <<'PERL'\n" + probeScript() + "PERL\n" +
		"\tperl /tmp/probe.pl builder || return 1\n\tsudo perl /tmp/probe.pl root || return 1"
	r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 70, Kind: "url", URL: serveFile(t, hostileScript("seccomp", script)), Repo: newRepo(), BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	got := map[string][2]int{}
	for _, m := range regexp.MustCompile(`(?m)^seccomp (\w+) (.+) (-?\d+) (\d+)$`).FindAllStringSubmatch(log, -1) {
		ret, _ := strconv.Atoi(m[3])
		errno, _ := strconv.Atoi(m[4])
		got[m[1]+" "+m[2]] = [2]int{ret, errno}
	}
	for _, who := range []string{"builder", "root"} {
		for _, p := range deniedProbes {
			res, ok := got[who+" "+p.name]
			switch {
			case !ok:
				t.Errorf("%s: no result for %s", who, p.name)
			case res[0] != -1 || unix.Errno(res[1]) != p.want:
				t.Errorf("%s: %s returned %d, errno %v; want -1, %v (%s)", who, p.name, res[0], unix.Errno(res[1]), p.want, unix.ErrnoName(p.want))
			}
		}
		for _, p := range allowedProbes {
			if res, ok := got[who+" "+p.name]; !ok || res[0] < 0 {
				t.Errorf("%s: %s refused (%v, errno %v): the probe cannot succeed", who, p.name, res, unix.Errno(res[1]))
			}
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", log)
	}
}
