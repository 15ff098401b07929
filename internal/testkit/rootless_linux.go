package testkit

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RootlessUser is an ordinary host user made for one test: a unique name,
// a home directory of mode 0700 (as Debian makes them), and a block of
// subordinate ids in /etc/subuid and /etc/subgid, so that vagent runs in
// rootless mode as it. The machine may be shared: the user and its
// entries are the test's own (useradd and usermod, which lock the files)
// and go with it (userdel removes its subordinate ids too), every other
// entry is left alone.
type RootlessUser struct {
	Name     string
	UID, GID int
	Home     string
	// SubBase is the first of its SubSize subordinate uids and gids.
	SubBase, SubSize int
}

// subBlockFirst is where test users' blocks go: far from the rootful
// agents' id ranges (100000, and systemd's container range that vagent
// picks from, preferably above SUB_UID_MAX), aligned to 65536.
const subBlockFirst = 400_000_000

// NewRootlessUser creates a user with 65536 subordinate ids, removed when
// the test ends (after its processes, which the test must have ended).
// It needs root, useradd, usermod and newuidmap (Debian packages passwd
// and uidmap): it skips without them, or fails in CI.
func NewRootlessUser(tb testing.TB) *RootlessUser {
	tb.Helper()
	RequireRoot(tb)
	for _, tool := range []struct{ name, pkg string }{{"useradd", "passwd"}, {"usermod", "passwd"}, {"userdel", "passwd"}, {"newuidmap", "uidmap"}, {"newgidmap", "uidmap"}} {
		RequireTool(tb, tool.name, tool.pkg)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	u := &RootlessUser{Name: "vgrl-" + hex.EncodeToString(b[:]), SubSize: 65536}
	base, err := os.MkdirTemp("", "vagent-rootless-")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		tb.Fatal(err)
	}
	u.Home = filepath.Join(base, "home")
	if out, err := exec.Command("useradd", "--no-create-home", "--home-dir", u.Home, "--shell", "/bin/sh", "--user-group",
		"-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", u.Name).CombinedOutput(); err != nil {
		os.RemoveAll(base)
		tb.Fatalf("useradd %s: %v: %s", u.Name, err, out)
	}
	tb.Cleanup(func() {
		u.killAll()
		// What a killed rootless agent of the user left in /tmp (its
		// runs' mount point directory; empty).
		if left, err := filepath.Glob("/tmp/vagent-runs-*"); err == nil {
			for _, p := range left {
				if fi, err := os.Lstat(p); err == nil && fi.IsDir() && int(fi.Sys().(*syscall.Stat_t).Uid) == u.UID {
					_ = os.Remove(p)
				}
			}
		}
		if out, err := exec.Command("userdel", u.Name).CombinedOutput(); err != nil {
			tb.Errorf("userdel %s: %v: %s", u.Name, err, out)
		}
		if err := os.RemoveAll(base); err != nil {
			tb.Errorf("removing %s: %v", base, err)
		}
	})
	if u.UID, u.GID, err = lookupUser(u.Name); err != nil {
		tb.Fatal(err)
	}
	// A free block: another test user's may be taken meanwhile, and
	// usermod refuses nothing, so the check and the write are retried
	// under a lock of our own users.
	subLock.Lock()
	defer subLock.Unlock()
	for try := 0; ; try++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(3000))
		first := subBlockFirst + int(n.Int64())*65536
		if !subFree(first, u.SubSize) {
			if try > 100 {
				tb.Fatal("no free block of subordinate ids for a test user")
			}
			continue
		}
		r := fmt.Sprintf("%d-%d", first, first+u.SubSize-1)
		if out, err := exec.Command("usermod", "--add-subuids", r, "--add-subgids", r, u.Name).CombinedOutput(); err != nil {
			tb.Fatalf("usermod %s: %v: %s", u.Name, err, out)
		}
		u.SubBase = first
		break
	}
	if err := os.Mkdir(u.Home, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chown(u.Home, u.UID, u.GID); err != nil {
		tb.Fatal(err)
	}
	return u
}

var subLock sync.Mutex

// subFree tells whether no /etc/subuid or /etc/subgid entry overlaps
// [first, first+n).
func subFree(first, n int) bool {
	for _, file := range []string{"/etc/subuid", "/etc/subgid"} {
		fh, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			f := strings.Split(sc.Text(), ":")
			if len(f) != 3 {
				continue
			}
			s, err1 := strconv.Atoi(f[1])
			c, err2 := strconv.Atoi(f[2])
			if err1 == nil && err2 == nil && s < first+n && s+c > first {
				fh.Close()
				return false
			}
		}
		fh.Close()
	}
	return true
}

func lookupUser(name string) (uid, gid int, err error) {
	out, err := exec.Command("getent", "passwd", name).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("getent passwd %s: %w", name, err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), ":")
	if len(f) < 4 {
		return 0, 0, fmt.Errorf("getent passwd %s: %q", name, out)
	}
	uid, err1 := strconv.Atoi(f[2])
	gid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("getent passwd %s: %q", name, out)
	}
	return uid, gid, nil
}

// Owns tells whether host id id is the user's or one of its subordinate
// ids.
func (u *RootlessUser) Owns(id int) bool {
	return id == u.UID || id == u.GID || (id >= u.SubBase && id < u.SubBase+u.SubSize)
}

// Env is the environment of a login of the user: HOME, USER, LOGNAME,
// PATH, plus extra ("KEY=value").
func (u *RootlessUser) Env(extra ...string) []string {
	return append([]string{"HOME=" + u.Home, "USER=" + u.Name, "LOGNAME=" + u.Name,
		"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"}, extra...)
}

// Command returns cmd to run as the user, in its home directory, with
// Env(): the process and everything it starts have the user's ids.
func (u *RootlessUser) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = u.Home
	cmd.Env = u.Env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID), Groups: []uint32{}}}
	return cmd
}

// Install copies the executable src (a test binary, which the user could
// not reach where go test put it) to the user's home as name and returns
// its path.
func (u *RootlessUser) Install(tb testing.TB, src, name string) string {
	tb.Helper()
	dir := filepath.Join(u.Home, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	in, err := os.Open(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
	for _, p := range []string{dir, dst} {
		if err := os.Chown(p, u.UID, u.GID); err != nil {
			tb.Fatal(err)
		}
	}
	return dst
}

// Procs lists the host processes whose real, effective, saved or
// filesystem uid is the user's or one of its subordinate ids.
func (u *RootlessUser) Procs() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		uids, err := procUIDs(pid)
		if err != nil {
			continue
		}
		for _, id := range uids {
			if u.Owns(id) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// killAll kills, by pid, what the test left running as the user.
func (u *RootlessUser) killAll() {
	for range 50 {
		pids := u.Procs()
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procUIDs returns the real, effective, saved and filesystem uids of pid.
func procUIDs(pid int) ([]int, error) {
	return procIDs(pid, "Uid:")
}

func procIDs(pid int, field string) ([]int, error) {
	_, ids, err := procStatus(pid, field)
	if err != nil {
		return nil, err
	}
	return ids[0], nil
}

// procStatus returns the name (comm) of process pid and the numbers of
// each of fields ("Uid:", "PPid:"), from one read of /proc/pid/status: a
// process that ends or execs between two reads cannot mix them.
func procStatus(pid int, fields ...string) (name string, vals [][]int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "", nil, err
	}
	vals = make([][]int, len(fields))
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Name:"); ok {
			name = strings.TrimSpace(v)
		}
		for i, field := range fields {
			v, ok := strings.CutPrefix(line, field)
			if !ok {
				continue
			}
			for _, f := range strings.Fields(v) {
				id, err := strconv.Atoi(f)
				if err != nil {
					return "", nil, err
				}
				vals[i] = append(vals[i], id)
			}
			found++
		}
	}
	if found != len(fields) || name == "" {
		return "", nil, fmt.Errorf("/proc/%d/status lacks its name or one of %v", pid, fields)
	}
	return name, vals, nil
}

// ProcWatch records, until Stop, every process that descends from a
// process started as the user, with its uids and gids, sampled from
// /proc.
type ProcWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen map[int]ProcSample
	// parent is the parent of every live process, read when it was first
	// seen (the sampling goroutine's own), not every 5 ms for every
	// process of the host (with the ids read once per process and sample,
	// TestRootlessEndToEnd's CPU went from 48 s to 40 s).
	parent map[int]int
}

// ProcSample is one process as ProcWatch saw it.
type ProcSample struct {
	PID        int
	Comm       string
	UIDs, GIDs []int
}

// WatchProcs samples the descendants of root (and root) every few
// milliseconds.
func WatchProcs(root int) *ProcWatch {
	w := &ProcWatch{stop: make(chan struct{}), done: make(chan struct{}), seen: map[int]ProcSample{}}
	go func() {
		defer close(w.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			w.sample(root)
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *ProcWatch) sample(root int) {
	entries, _ := os.ReadDir("/proc")
	parent := make(map[int]int, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := w.parent[pid]; ok {
			parent[pid] = pp
		} else if pp, err := procIDs(pid, "PPid:"); err == nil && len(pp) == 1 {
			parent[pid] = pp[0]
		}
	}
	w.parent = parent
	under := func(pid int) bool {
		for i := 0; i < 64 && pid > 1; i++ {
			if pid == root {
				return true
			}
			pid = parent[pid]
		}
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for pid := range parent {
		if !under(pid) {
			continue
		}
		comm, ids, err := procStatus(pid, "Uid:", "Gid:")
		if err != nil {
			continue
		}
		uids, gids := ids[0], ids[1]
		key := pid
		if old, ok := w.seen[key]; ok && fmt.Sprint(old.UIDs, old.GIDs) == fmt.Sprint(uids, gids) {
			continue
		}
		w.seen[key] = ProcSample{PID: pid, Comm: comm, UIDs: uids, GIDs: gids}
	}
}

// Stop ends the watch and returns what it saw.
func (w *ProcWatch) Stop() []ProcSample {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]ProcSample, 0, len(w.seen))
	for _, s := range w.seen {
		out = append(out, s)
	}
	return out
}

// idMapTools are the setuid-root helpers of rootless mode (Debian's
// uidmap): run by the user, they write the id maps of its namespace and
// exit.
var idMapTools = map[string]bool{"newuidmap": true, "newgidmap": true}

// CheckProcs fails tb for every sampled process that had a host id that
// is not the user's or one of its subordinate ids — host root's above
// all — and returns how many processes were seen. The one exception is
// newuidmap and newgidmap, setuid root by design, whose real ids must be
// the user's.
func (u *RootlessUser) CheckProcs(tb testing.TB, samples []ProcSample) int {
	tb.Helper()
	for _, s := range samples {
		ids := append(append([]int{}, s.UIDs...), s.GIDs...)
		if idMapTools[s.Comm] && len(s.UIDs) == 4 && len(s.GIDs) == 4 {
			ids = []int{s.UIDs[0], s.GIDs[0]} // the real ids: the user's
		}
		for _, id := range ids {
			if !u.Owns(id) {
				tb.Errorf("process %d (%s) ran with uids %v gids %v: not all the user's (%d, subordinate %d-%d)",
					s.PID, s.Comm, s.UIDs, s.GIDs, u.UID, u.SubBase, u.SubBase+u.SubSize-1)
				break
			}
		}
	}
	return len(samples)
}

// CheckOwners fails tb for every file under dir owned by host root or by
// an id that is not the user's (or one of its subordinate ids); it
// returns how many entries it checked and how many were owned by
// subordinate ids.
func (u *RootlessUser) CheckOwners(tb testing.TB, dir string) (n, sub int) {
	tb.Helper()
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n++
		if !u.Owns(int(st.Uid)) || !u.Owns(int(st.Gid)) {
			tb.Errorf("%s is owned by %d:%d, not by the user %s or its subordinate ids", p, st.Uid, st.Gid, u.Name)
		}
		if int(st.Uid) != u.UID {
			sub++
		}
		return nil
	})
	if err != nil {
		tb.Errorf("walking %s: %v", dir, err)
	}
	return n, sub
}

// RequireRootlessNetwork skips tb (fails it in CI) unless an ordinary
// user's pasta can open /dev/net/tun: mode 0666, as udev makes it (make
// deps sets it on a host without udev).
func RequireRootlessNetwork(tb testing.TB) {
	tb.Helper()
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		Unavailable(tb, "no /dev/net/tun: %v", err)
		return
	}
	if fi.Mode().Perm()&0o006 != 0o006 {
		Unavailable(tb, "/dev/net/tun is mode %#o: rootless builds' pasta needs 0666 (make deps sets it)", fi.Mode().Perm())
	}
}
