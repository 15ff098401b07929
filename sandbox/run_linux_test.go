package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

func TestExitCodes(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		output string
	}{
		{"success", []string{"/bin/true"}, 0, ""},
		{"failure", []string{"/bin/false"}, 1, ""},
		{"status", []string{"sh", "-c", "echo out; exit 42"}, 42, "out\n"},
		{"not found", []string{"/bin/no-such-command"}, 127, "no-such-command"},
		{"not in PATH", []string{"no-such-command"}, 127, "no-such-command"},
		{"not executable", []string{"/etc/passwd"}, 126, "passwd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out sandboxtest.Buffer
			res, err := e.m.Run(t.Context(), sandbox.Spec{Lower: rootfs, Args: tc.args, Env: pathEnv, Output: &out})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != tc.code || res.Signal != 0 || res.TimedOut || res.Cancelled || res.OOMKilled {
				t.Errorf("result %+v, want exit %d", res, tc.code)
			}
			if !strings.Contains(out.String(), tc.output) {
				t.Errorf("output %q does not contain %q", out.String(), tc.output)
			}
			if res.Started.IsZero() || res.Finished.Before(res.Started) {
				t.Errorf("times %v .. %v", res.Started, res.Finished)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	script := `echo "$GREETING|$(pwd)|$(id -u):$(id -g)|$(id -G)|$(hostname)|$(id -un)"`
	for _, tc := range []struct {
		name string
		spec func(*sandbox.Spec)
		want string
	}{
		{"root defaults", func(s *sandbox.Spec) {}, "hi|/|0:0|0|vagent|root"},
		{"builder", func(s *sandbox.Spec) {
			s.UID, s.GID, s.Groups = 1000, 1000, []uint32{10}
			s.Dir, s.Hostname = "/home/builder", "build-42"
		}, "hi|/home/builder|1000:1000|1000 10|build-42|builder"},
		{"missing dir is created", func(s *sandbox.Spec) { s.Dir = "/work/a/b" }, "hi|/work/a/b|0:0|0|vagent|root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, out := sh(t, e.m, rootfs, script, func(s *sandbox.Spec) {
				s.Env = append(s.Env, "GREETING=hi")
				tc.spec(s)
			})
			if res.ExitCode != 0 {
				t.Fatalf("exit %d: %s", res.ExitCode, out)
			}
			if got := strings.TrimSpace(out); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHostProcessesInvisible(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, e.m, rootfs, `ls /proc | grep -E '^[0-9]+$' | tr '\n' ' '; echo; cat /proc/1/cmdline | tr '\0' ' '`)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, out)
	}
	lines := strings.Split(out, "\n")
	for _, f := range strings.Fields(lines[0]) {
		if pid, _ := strconv.Atoi(f); pid > 10 {
			t.Errorf("pid %d visible in the container: %q", pid, lines[0])
		}
	}
	if !strings.HasPrefix(lines[1], "/bin/sh -c") {
		t.Errorf("pid 1 is %q, want the container's shell", lines[1])
	}
	if strings.Contains(out, strconv.Itoa(os.Getpid())+" ") {
		t.Errorf("host pid %d visible: %q", os.Getpid(), out)
	}
}

// snapshot records every file of a tree: type, mode, owner, size, mtime
// and content.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%v %d:%d %d %d", fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + strconv.Quote(string(data[:min(len(data), 64)])) + strconv.Itoa(len(data))
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		}
		m[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestWritesStayInside(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	host := sandboxtest.Dir(t)
	secret := filepath.Join(host, "secret")
	if err := os.WriteFile(secret, []byte("host data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	roDir, rootDir, cacheDir := filepath.Join(host, "ro"), filepath.Join(host, "rootowned"), filepath.Join(host, "cache")
	for _, d := range []string{roDir, rootDir, cacheDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(cacheDir, 100000, 100000); err != nil {
		t.Fatal(err)
	}
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	before, hostBefore := snapshot(t, rootfs), snapshot(t, host)
	var st syscall.Stat_t
	if err := syscall.Stat(host, &st); err != nil {
		t.Fatal(err)
	}
	major, minor := st.Dev>>8&0xfff, st.Dev&0xff|st.Dev>>12&0xfff00

	script := fmt.Sprintf(`
for d in / /bin /etc /root /home/builder /usr/bin /work /tmp /mnt/ro /mnt/rw /mnt/cache; do echo x > $d/new-file; done
rm -rf /bin/ls /etc/hostname /home; echo pwned >> /etc/passwd; chmod 777 /etc; chown 1000 /bin/busybox
find / -xdev -type f -exec sh -c 'echo x >> "$1"' _ {} \; 2>/dev/null
echo x >> /etc/resolv.conf && echo WROTE resolv.conf
echo x > /proc/sys/kernel/hostname && echo WROTE proc/sys
echo x > /sys/kernel/uevent_helper && echo WROTE sys
mknod /tmp/disk b %d %d && cat /tmp/disk >/dev/null && echo READ host disk
echo x >> /proc/1/root/../../%s && echo WROTE via proc root
cat %s 2>/dev/null && echo SAW host secret
ls /mnt/ro /mnt/rw /mnt/cache
exit 0`, major, minor, secret, secret)
	res, out := sh(t, e.m, rootfs, script, func(s *sandbox.Spec) {
		s.Mounts = []sandbox.Mount{
			{Source: roDir, Target: "/mnt/ro", ReadOnly: true},
			{Source: rootDir, Target: "/mnt/rw"},
			{Source: cacheDir, Target: "/mnt/cache"},
		}
	})
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, out)
	}
	if strings.Contains(out, "WROTE") || strings.Contains(out, "READ") || strings.Contains(out, "SAW") {
		t.Errorf("container escaped:\n%s", out)
	}
	if diff := cmp.Diff(before, snapshot(t, rootfs)); diff != "" {
		t.Errorf("lower rootfs changed (-before +after):\n%s", diff)
	}
	hostAfter := snapshot(t, host)
	cached := filepath.Join(cacheDir, "new-file")
	fi, err := os.Stat(cached)
	if err != nil {
		t.Errorf("write to the read-write cache mount did not arrive: %v\n%s", err, out)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != 100000 {
		t.Errorf("cache file owned by host uid %d, want the mapped 100000", st.Uid)
	}
	delete(hostAfter, cached)
	delete(hostAfter, cacheDir)
	delete(hostBefore, cacheDir)
	if diff := cmp.Diff(hostBefore, hostAfter); diff != "" {
		t.Errorf("host files changed (-before +after):\n%s", diff)
	}
	if after, _ := os.ReadFile("/etc/resolv.conf"); string(after) != string(resolv) {
		t.Errorf("host resolv.conf changed")
	}
}

func TestMountsAndSecurity(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Skip("host has no /etc/resolv.conf")
	}
	script := `
ls /dev | tr '\n' ' '; echo
grep -E ' (/sys|/tmp|/proc|/dev/pts|/dev/shm) ' /proc/mounts | cut -d' ' -f2,3,4 | cut -d, -f1 | sort | tr '\n' ';'; echo
cat /proc/keys /proc/interrupts | wc -c
(touch /sys/x && echo sys writable) 2>/dev/null
(echo 1 > /proc/sys/vm/drop_caches && echo proc/sys writable) 2>/dev/null
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr '\t' ' ' | tr '\n' ';'; echo
unshare -U true 2>/dev/null && echo made a user namespace
mount -t tmpfs none /mnt 2>/dev/null && echo mounted
cat /etc/resolv.conf
`
	res, out := sh(t, e.m, rootfs, script)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, out)
	}
	lines := strings.SplitN(out, "\n", 5)
	for _, dev := range []string{"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"} {
		if !strings.Contains(" "+lines[0], " "+dev+" ") {
			t.Errorf("/dev lacks %s: %q", dev, lines[0])
		}
	}
	for _, want := range []string{"/dev/pts devpts rw", "/dev/shm tmpfs rw", "/proc proc rw", "/sys sysfs ro", "/tmp tmpfs rw"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("mounts %q lack %q", lines[1], want)
		}
	}
	if strings.TrimSpace(lines[2]) != "0" {
		t.Errorf("/proc/keys and /proc/interrupts not masked: %q", lines[2])
	}
	for _, bad := range []string{"sys writable", "proc/sys writable", "made a user namespace", "mounted"} {
		if strings.Contains(out, bad) {
			t.Errorf("%s:\n%s", bad, out)
		}
	}
	want := fmt.Sprintf("CapEff: %016x;CapBnd: %016x;NoNewPrivs: 0;", dockerCapMask, dockerCapMask)
	if sandbox.SeccompSupported {
		want += "Seccomp: 2;"
	}
	if !strings.HasPrefix(lines[3], want) {
		t.Errorf("status %q, want prefix %q", lines[3], want)
	}
	if !strings.HasSuffix(out, string(hostResolv)) {
		t.Errorf("container resolv.conf is not the host's:\n%s", out)
	}

	// A non-root user has no capabilities, but may gain them through
	// setuid binaries (no no_new_privs), bounded by Docker's set.
	res, out = sh(t, e.m, rootfs, `grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status | tr '\t' ' ' | tr '\n' ';'`,
		func(s *sandbox.Spec) { s.UID, s.GID = 1000, 1000 })
	want = fmt.Sprintf("CapEff: %016x;CapBnd: %016x;NoNewPrivs: 0;", 0, dockerCapMask)
	if res.ExitCode != 0 || out != want {
		t.Errorf("builder: exit %d status %q, want %q", res.ExitCode, out, want)
	}
}

// dockerCapMask is Docker's default capability set as a bit mask.
var dockerCapMask = func() uint64 {
	var m uint64
	for _, c := range []uint{0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31} {
		m |= 1 << c
	}
	return m
}()

func TestSeccompProfile(t *testing.T) {
	if !sandbox.SeccompSupported {
		t.Skip("built without seccomp support (needs cgo and -tags seccomp, as make test does)")
	}
	rootfs := sandboxtest.BusyboxRootfs(t)
	// Container root needs no capability to create a user namespace (and,
	// in it, mount namespaces and mounts): only the filter stops it. The
	// run without the filter shows that the probe can succeed.
	script := `unshare -U -r sh -c 'unshare -m mount -t tmpfs none /tmp && echo mounted' 2>&1; grep Seccomp: /proc/self/status | tr -d '\t'`
	for _, tc := range []struct {
		seccomp bool
		want    string
	}{
		{true, "unshare: unshare(0x10000000): Operation not permitted\nSeccomp:2\n"},
		{false, "mounted\nSeccomp:0\n"},
	} {
		t.Run(fmt.Sprint("seccomp=", tc.seccomp), func(t *testing.T) {
			e := newManager(t, sandbox.WithSeccomp(tc.seccomp))
			res, out := sh(t, e.m, rootfs, script)
			if res.ExitCode != 0 || out != tc.want {
				t.Errorf("exit %d output %q, want %q", res.ExitCode, out, tc.want)
			}
		})
	}
}

func TestNetwork(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	hostIfaces, _ := os.ReadDir("/sys/class/net")
	res, out := sh(t, e.m, rootfs, `ip -o link | wc -l`, func(s *sandbox.Spec) { s.Network = sandbox.NetworkHost })
	if res.ExitCode != 0 || strings.TrimSpace(out) != strconv.Itoa(len(hostIfaces)) {
		t.Errorf("host network: exit %d, %q interfaces, host has %d", res.ExitCode, out, len(hostIfaces))
	}
	res, out = sh(t, e.m, rootfs, `ip -o link | wc -l; ip -o link | grep -c 'lo: <LOOPBACK,UP'; ping -c1 -W1 127.0.0.1 >/dev/null && echo ping ok`,
		func(s *sandbox.Spec) { s.Network = sandbox.NetworkNone })
	if res.ExitCode != 0 || out != "1\n1\nping ok\n" {
		t.Errorf("none network: exit %d:\n%s", res.ExitCode, out)
	}
	// The default: isolated, loopback and pasta's interface.
	res, out = sh(t, e.m, rootfs, `ip -o link | wc -l; ip -o link | grep -c 'lo: <LOOPBACK,UP'; ip route | grep -c '^default'`)
	if res.ExitCode != 0 || out != "2\n1\n1\n" {
		t.Errorf("isolated network: exit %d:\n%s", res.ExitCode, out)
	}
}

// TestOutputIsLiveAndOrdered: output reaches the writer while the process
// runs, stdout and stderr in the order written. The script waits, after
// its first lines, for a file the test creates only once it has read
// them: output held back until the process ends would never arrive, and
// the run would end at its deadline instead.
func TestOutputIsLiveAndOrdered(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	gateDir := sandboxtest.Dir(t)
	if err := os.Chmod(gateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := &readyWriter{want: "a\nb\nc\n", ready: make(chan struct{})}
	go func() {
		select {
		case <-w.ready:
			_ = os.WriteFile(filepath.Join(gateDir, "go"), nil, 0o644)
		case <-t.Context().Done():
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res, err := e.m.Run(ctx, sandbox.Spec{
		Lower: rootfs, Env: pathEnv, Output: w,
		Mounts: []sandbox.Mount{{Source: gateDir, Target: "/gate", ReadOnly: true}},
		Args:   []string{"sh", "-c", "echo a; echo b >&2; echo c; until [ -e /gate/go ]; do sleep 0.05; done; echo d >&2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.TimedOut {
		t.Fatalf("the first lines never reached the writer while the process ran: %q", w.String())
	}
	if res.ExitCode != 0 || w.String() != "a\nb\nc\nd\n" {
		t.Errorf("exit %d output %q", res.ExitCode, w.String())
	}
}

// readyWriter collects output and closes ready once it contains want.
type readyWriter struct {
	sandboxtest.Buffer
	want  string
	ready chan struct{}
	once  sync.Once
}

func (w *readyWriter) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if strings.Contains(w.Buffer.String(), w.want) {
		w.once.Do(func() { close(w.ready) })
	}
	return n, err
}

// findProcs returns host processes whose command line contains s.
func findProcs(s string) []string {
	var found []string
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil && strings.Contains(strings.ReplaceAll(string(data), "\x00", " "), s) {
			found = append(found, f+": "+strings.ReplaceAll(string(data), "\x00", " "))
		}
	}
	return found
}

func TestTimeoutKillsEverything(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	// The shell ignores SIGTERM; a double-forked sleep ignores it too.
	script := `trap "" TERM; ( (trap "" TERM; exec sleep 1234.5) & ); sleep 1235.5 & echo ready; while :; do sleep 1; done`
	// The timeout leaves container creation seconds even on a loaded host;
	// the cancellation comes once the script said it is ready. Either way
	// Run returns within the grace period and some slack, where the
	// script would run for 20 minutes.
	const deadline, grace = 4 * time.Second, 300 * time.Millisecond
	for _, tc := range []struct {
		name    string
		ctx     func(ready <-chan struct{}) (context.Context, context.CancelFunc)
		timeout bool
	}{
		{"timeout", func(<-chan struct{}) (context.Context, context.CancelFunc) {
			return context.WithTimeout(t.Context(), deadline)
		}, true},
		{"cancel", func(ready <-chan struct{}) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(t.Context())
			go func() {
				select {
				case <-ready:
					cancel()
				case <-ctx.Done():
				}
			}()
			return ctx, cancel
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := &readyWriter{want: "ready\n", ready: make(chan struct{})}
			ctx, cancel := tc.ctx(out.ready)
			defer cancel()
			start := time.Now()
			res, err := e.m.Run(ctx, sandbox.Spec{
				Lower: rootfs, Env: pathEnv, Output: out, Grace: grace,
				Args: []string{"sh", "-c", script},
			})
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if res.TimedOut != tc.timeout || res.Cancelled == tc.timeout || res.Signal != syscall.SIGKILL || res.ExitCode != 137 {
				t.Errorf("result %+v", res)
			}
			if limit := deadline + grace + 10*time.Second; took > limit {
				t.Errorf("Run returned %v after start, more than %v", took, limit)
			}
			if !strings.Contains(out.String(), "ready") {
				t.Errorf("output %q", out.String())
			}
			if p := append(findProcs("sleep 1234.5"), findProcs("sleep 1235.5")...); len(p) > 0 {
				t.Errorf("processes survived: %v", p)
			}
			if l := leftovers(e.dir, e.parent, false); len(l) > 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
}

func TestNotStartedAfterCancel(t *testing.T) {
	e := newManager(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := e.m.Run(ctx, sandbox.Spec{Lower: sandboxtest.BusyboxRootfs(t), Args: []string{"true"}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run on a cancelled context: %v", err)
	}
}

func TestPidsLimit(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	const limit = 40
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	done, sampled := make(chan struct{}), make(chan struct{})
	var maxPids int
	var hostWorst time.Duration
	go func() {
		defer close(sampled)
		// Sample the container's process count and the host's latency.
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			var files []string
			for _, d := range cgroupParentDirs(e.parent) {
				f, _ := filepath.Glob(filepath.Join(d, "*", "cgroup.procs"))
				files = append(files, f...)
			}
			for _, f := range files {
				if data, err := os.ReadFile(f); err == nil {
					maxPids = max(maxPids, len(strings.Fields(string(data))))
				}
			}
			s := time.Now()
			if err := exec1("/bin/true"); err != nil {
				t.Errorf("host exec during fork bomb: %v", err)
				return
			}
			hostWorst = max(hostWorst, time.Since(s))
		}
	}()
	var out sandboxtest.Buffer
	res, err := e.m.Run(ctx, sandbox.Spec{
		Lower: rootfs, Env: pathEnv, Output: &out, Limits: &sandbox.Limits{Pids: limit},
		Args: []string{"sh", "-c", `bomb() { bomb | bomb & }; bomb; sleep 10`},
	})
	close(done)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("result %+v, most processes seen %d, worst host exec %v", res, maxPids, hostWorst)
	if maxPids == 0 || maxPids > limit {
		t.Errorf("container had up to %d processes, limit %d", maxPids, limit)
	}
	if !strings.Contains(out.String(), "fork") {
		t.Errorf("no fork failure reported: %q", out.String()[:min(200, len(out.String()))])
	}
	if hostWorst > time.Second {
		t.Errorf("host unresponsive: exec of /bin/true took %v", hostWorst)
	}
}

func TestMemoryLimit(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, e.m, rootfs, `echo start; exec dd if=/dev/zero of=/dev/null bs=256M count=1`, func(s *sandbox.Spec) {
		s.Limits = &sandbox.Limits{Memory: 32 << 20}
	})
	if !res.OOMKilled || res.Signal != syscall.SIGKILL || res.ExitCode != 137 {
		t.Errorf("result %+v, output %q; want OOM kill", res, out)
	}
	res, out = sh(t, e.m, rootfs, `exec dd if=/dev/zero of=/dev/null bs=8M count=1`, func(s *sandbox.Spec) {
		s.Limits = &sandbox.Limits{Memory: 64 << 20, CPUWeight: 50, CPUQuota: 0.5}
	})
	if res.OOMKilled || res.ExitCode != 0 {
		t.Errorf("small allocation: result %+v, output %q", res, out)
	}
}

func TestConcurrentRunsShareLower(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	const n = 8
	var wg sync.WaitGroup
	outs := make([]string, n)
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			res, out := sh(t, e.m, rootfs, fmt.Sprintf(
				`echo %d > /etc/marker; echo %d > /mine-%d; rm /bin/ls; sleep 0.5; cat /etc/marker; ls / | grep mine- | tr '\n' ' '; echo; test ! -e /bin/ls`, i, i, i))
			outs[i], codes[i] = out, res.ExitCode
		})
	}
	wg.Wait()
	for i := range n {
		want := fmt.Sprintf("%d\nmine-%d \n", i, i)
		if codes[i] != 0 || outs[i] != want {
			t.Errorf("run %d: exit %d output %q, want %q", i, codes[i], outs[i], want)
		}
	}
	if _, err := os.Stat(filepath.Join(rootfs, "bin/ls")); err != nil {
		t.Errorf("lower lost /bin/ls: %v", err)
	}
}

func TestKeepUpper(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, e.m, rootfs, `echo new > /new; rm /etc/hostname; rm -rf /home; mkdir -p /home/x; chown 1000:1000 /home/x`,
		func(s *sandbox.Spec) { s.KeepUpper = true })
	if res.ExitCode != 0 || res.Upper == nil {
		t.Fatalf("exit %d upper %v: %s", res.ExitCode, res.Upper, out)
	}
	u := res.Upper
	if u.UIDBase != 100000 || u.GIDBase != 100000 {
		t.Errorf("upper id base %d:%d", u.UIDBase, u.GIDBase)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(u.Path, "etc/hostname"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
		t.Errorf("etc/hostname is not a whiteout: %v mode %o rdev %d", err, st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	if n, err := syscall.Getxattr(filepath.Join(u.Path, "home"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("home is not opaque: %v %q", err, buf[:n])
	}
	if err := syscall.Stat(filepath.Join(u.Path, "home/x"), &st); err != nil || st.Uid != 101000 || st.Gid != 101000 {
		t.Errorf("home/x owner %d:%d (%v), want shifted 101000", st.Uid, st.Gid, err)
	}
	if data, err := os.ReadFile(filepath.Join(u.Path, "new")); err != nil || string(data) != "new\n" {
		t.Errorf("new file: %q %v", data, err)
	}
	if err := u.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(u.Path); !os.IsNotExist(err) {
		t.Errorf("upper still there after Release: %v", err)
	}
	if err := u.Release(); !errors.Is(err, sandbox.ErrReleased) {
		t.Errorf("second Release: %v", err)
	}
}

func TestReadOnlyRun(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, e.m, rootfs, `touch /x 2>/dev/null && echo wrote; echo ok > /tmp/y && cat /tmp/y; stat -c %u /bin/busybox`,
		func(s *sandbox.Spec) { s.ReadOnly = true })
	if res.ExitCode != 0 || out != "ok\n0\n" {
		t.Errorf("exit %d output %q", res.ExitCode, out)
	}
}

func TestOutputPanicCleansUp(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	defer func() {
		v := recover()
		if v != "writer exploded" {
			t.Errorf("recovered %v, want the writer's panic", v)
		}
		if l := leftovers(e.dir, e.parent, false); len(l) > 0 {
			t.Errorf("left behind after a panic: %v", l)
		}
		if p := findProcs("sleep 1236.5"); len(p) > 0 {
			t.Errorf("processes survived: %v", p)
		}
	}()
	_, _ = e.m.Run(t.Context(), sandbox.Spec{
		Lower: rootfs, Env: pathEnv, Output: panicWriter{},
		Args: []string{"sh", "-c", "sleep 1236.5 & echo boom; wait"},
	})
	t.Error("Run returned instead of panicking")
}

type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("writer exploded") }

func TestInvalidSpecs(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	for name, spec := range map[string]sandbox.Spec{
		"relative lower":   {Lower: "rootfs", Args: []string{"true"}},
		"comma in lower":   {Lower: "/a,b", Args: []string{"true"}},
		"no args":          {Lower: rootfs},
		"relative dir":     {Lower: rootfs, Args: []string{"true"}, Dir: "tmp"},
		"bad hostname":     {Lower: rootfs, Args: []string{"true"}, Hostname: "a b"},
		"mount over root":  {Lower: rootfs, Args: []string{"true"}, Mounts: []sandbox.Mount{{Source: "/tmp", Target: "/"}}},
		"swap below mem":   {Lower: rootfs, Args: []string{"true"}, Limits: &sandbox.Limits{Memory: 10, MemorySwap: 5}},
		"keep read-only":   {Lower: rootfs, Args: []string{"true"}, ReadOnly: true, KeepUpper: true},
		"nul in argument":  {Lower: rootfs, Args: []string{"true", "a\x00b"}},
		"malformed env":    {Lower: rootfs, Args: []string{"true"}, Env: []string{"NOEQUALS"}},
		"negative grace":   {Lower: rootfs, Args: []string{"true"}, Grace: -1},
		"unknown network":  {Lower: rootfs, Args: []string{"true"}, Network: 7},
		"bad forward":      {Lower: rootfs, Args: []string{"true"}, Forward: []string{"127.0.0.1"}},
		"forward on host":  {Lower: rootfs, Args: []string{"true"}, Network: sandbox.NetworkHost, Forward: []string{"127.0.0.1:80"}},
		"control on none":  {Lower: rootfs, Args: []string{"true"}, Network: sandbox.NetworkNone, NetworkControl: sandbox.NewNetworkControl()},
		"cpu weight range": {Lower: rootfs, Args: []string{"true"}, Limits: &sandbox.Limits{CPUWeight: 10001}},
	} {
		if _, err := e.m.Run(t.Context(), spec); !errors.Is(err, sandbox.ErrInvalidSpec) {
			t.Errorf("%s: %v, want ErrInvalidSpec", name, err)
		}
	}
}
