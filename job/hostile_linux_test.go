package job_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// The hostile-build suite: each subtest is a PKGBUILD that attacks the host
// through the real agent and sandbox, and asserts what the host looks like
// afterwards (files, modes, owners, the agent's memory and liveness), not
// only how the build ended. See docs/security.md.

// hostileScript returns a PKGBUILD whose build() runs script.
func hostileScript(name, script string, extra ...string) string {
	return strings.Replace(pkgbuild(name, "1", "1", extra...), `build() { echo "building $pkgname"; }`, "build() {\n"+script+"\n}", 1)
}

// token returns a random name part, so that a test never finds what an
// earlier run left.
func token(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// reachableByNobody tells whether the unprivileged host user 65534 can
// stat path: it runs stat under setpriv, as that user with no groups.
func reachableByNobody(t testing.TB, path string) bool {
	t.Helper()
	setpriv := testkit.RequireTool(t, "setpriv", "util-linux")
	out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--", "stat", "--", path).CombinedOutput()
	if err == nil {
		return true
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("stat %s as nobody: %v: %s", path, err, out)
	}
	return false
}

// privileged lists the regular files below root that could give a host
// user privileges: setuid or setgid, or with a security.capability xattr.
func privileged(root string) []string {
	var found []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		sz, _ := unix.Lgetxattr(p, "security.capability", nil)
		if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 || sz > 0 {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// assertNoHostUsable fails t for every privileged file below the roots that
// host user 65534 can reach; it returns how many privileged files it saw.
func assertNoHostUsable(t *testing.T, roots ...string) int {
	t.Helper()
	n := 0
	for _, root := range roots {
		for _, p := range privileged(root) {
			n++
			if reachableByNobody(t, p) {
				fi, _ := os.Lstat(p)
				st := fi.Sys().(*syscall.Stat_t)
				t.Errorf("%s (%v, %d:%d) is privileged and reachable by every host user", p, fi.Mode(), st.Uid, st.Gid)
			}
		}
	}
	return n
}

// capsTar is a tar of one file carrying a file capability (cap_setuid+ep),
// which bsdtar restores as root.
func capsTar(t testing.TB) []byte {
	t.Helper()
	var capData [20]byte
	binary.LittleEndian.PutUint32(capData[0:], 0x02000000|0x1) // VFS_CAP_REVISION_2 | effective
	binary.LittleEndian.PutUint32(capData[4:], 1<<7)           // CAP_SETUID permitted
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte("#!/bin/sh\nid\n")
	if err := tw.WriteHeader(&tar.Header{
		Name: "hostile-caps", Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg, Format: tar.FormatPAX,
		PAXRecords: map[string]string{"SCHILY.xattr.security.capability": string(capData[:])},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// logWatch is a build log that signals when a string appeared in it.
type logWatch struct {
	sandboxtest.Buffer
	mu   sync.Mutex
	tail string
	want string
	seen chan struct{}
	once sync.Once
}

func newLogWatch(want string) *logWatch {
	return &logWatch{want: want, seen: make(chan struct{})}
}

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	s := w.tail + string(p)
	if strings.Contains(s, w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	if len(s) > len(w.want) {
		s = s[len(s)-len(w.want):]
	}
	w.tail = s
	w.mu.Unlock()
	return w.Buffer.Write(p)
}

func TestHostileBuilds(t *testing.T) {
	e := setup(t)

	// Every writable mount of a build holds setuid root, setgid and file
	// capability binaries afterwards: none is reachable by a host user,
	// and those in the shared cache are owned by the mapped ids, not root.
	t.Run("setuid files in every writable mount", func(t *testing.T) {
		t.Parallel()
		caps := capsTar(t)
		capsURL := serveHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(caps) }))
		script := `	curl -sSf -o /tmp/caps.tar ` + capsURL + `/caps.tar || return 1
	for d in /var/cache/pacman/pkg /build /tmp /; do
		sudo cp /bin/bash "$d/hostile-suid" && sudo chmod 4755 "$d/hostile-suid" || return 1
		sudo cp /bin/bash "$d/hostile-sgid" && sudo chown 1000:1000 "$d/hostile-sgid" && sudo chmod 6755 "$d/hostile-sgid" || return 1
		sudo bsdtar -xpf /tmp/caps.tar -C "$d" || return 1
		echo "planted in $d"
	done
	sudo ls -ln /var/cache/pacman/pkg`
		var upperSeen atomic.Int32
		var upperErrs []string
		// The agent's layout: the cache beside build/ in a data directory
		// every user may search, not inside the 0700 build/.
		data := sandboxtest.Dir(t)
		dir := filepath.Join(data, "build")
		b, err := job.New(e.sb, e.images, dir, job.WithServer(serverClient(t, e.ts.URL)), job.WithArch("x86_64"), netOpt(),
			job.WithCacheDir(filepath.Join(data, "pacman-cache")),
			job.WithUpperHook(func(upper string) {
				for _, p := range privileged(upper) {
					upperSeen.Add(1)
					if reachableByNobody(t, p) {
						upperErrs = append(upperErrs, p)
					}
				}
			}))
		if err != nil {
			t.Fatal(err)
		}
		r, log := runJob(t, b, poll.Job{TargetID: 50, Kind: "url", URL: serveFile(t, hostileScript("suid", script)), Repo: newRepo(), BaseImage: e.base})
		wantStatus(t, r, log, poll.ResultSuccess, 0)
		if !strings.Contains(log, "planted in /var/cache/pacman/pkg") || !strings.Contains(log, "planted in /\n") {
			t.Fatalf("the attack did not run:\n%s", log)
		}
		if upperSeen.Load() < 6 || len(upperErrs) > 0 {
			t.Errorf("upper: %d privileged files, reachable by nobody: %v", upperSeen.Load(), upperErrs)
		}
		cache := job.CacheTree(b, poll.Job{TargetID: 50})
		for _, name := range []string{"hostile-suid", "hostile-sgid", "hostile-caps"} {
			fi, err := os.Lstat(filepath.Join(cache, name))
			if err != nil {
				t.Fatalf("the planted file is not in the cache: %v", err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if st.Uid < 100000 || st.Uid >= 165536 || st.Gid < 100000 || st.Gid >= 165536 {
				t.Errorf("cache/%s is owned by %d:%d, outside the mapped range", name, st.Uid, st.Gid)
			}
		}
		// The whole of this build's state and of the sandbox's.
		if n := assertNoHostUsable(t, data, filepath.Join(e.dir, "sandbox")); n < 3 {
			t.Errorf("found %d privileged files in the cache, want the 3 planted: is the walk blind?", n)
		}
		// The check itself can see a reachable privileged file.
		if su, err := exec.LookPath("su"); err == nil && !reachableByNobody(t, su) {
			t.Errorf("the reachability check cannot reach %s", su)
		}
	})

	// The cache holds no lock a build could take: the agent's lock of the
	// target's cache lies beside the tree it mounts. What a build plants
	// in its cache — a link to a host path, a FIFO, a directory — is removed
	// after it without being followed or opened, and the target's next
	// build is not held up by it.
	t.Run("cache plants", func(t *testing.T) {
		t.Parallel()
		target := "/etc/vagent-hostile-" + token(t)
		t.Cleanup(func() { os.Remove(target) })
		script := `	sudo ls -A /var/cache/pacman/pkg | sed 's/^/CACHE /'
	sudo ln -s ` + target + ` /var/cache/pacman/pkg/link-1-1-any.pkg.tar.zst || return 1
	sudo mkfifo -m 666 /var/cache/pacman/pkg/fifo-1-1-any.pkg.tar.zst || return 1
	sudo mkdir -p /var/cache/pacman/pkg/dir.pkg.tar.zst/sub || return 1
	echo planted`
		b := newBuilder(t, e)
		j := poll.Job{TargetID: 51, Kind: "url", URL: serveFile(t, hostileScript("plants", script)), Repo: newRepo(), BaseImage: e.base, Force: true}
		r, log := runJob(t, b, j)
		wantStatus(t, r, log, poll.ResultSuccess, 0)
		if !strings.Contains(log, "planted") {
			t.Fatalf("the attack did not run:\n%s", log)
		}
		if strings.Contains(log, "CACHE ") {
			t.Errorf("the build found files in its fresh cache (a lock?):\n%s", log)
		}
		tree := job.CacheTree(b, j)
		if ents, err := os.ReadDir(tree); err != nil || len(ents) > 0 {
			t.Errorf("the cache after the build: %v, %v; want what was planted removed", ents, err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the agent created %s: %v", target, err)
		}
		done := make(chan result, 1)
		go func() {
			r, _ := runJob(t, b, j)
			done <- r
		}()
		select {
		case r := <-done:
			if r.Result != poll.ResultSuccess {
				t.Errorf("the target's next build: %s", r.Reason)
			}
		case <-time.After(5 * time.Minute):
			t.Fatal("the target's next build did not end")
		}
	})

	// 256 MiB without a line break into the srcinfo FIFO while the
	// PKGBUILD is read: the build fails, the agent's heap stays bounded.
	t.Run("srcinfo FIFO flood", func(t *testing.T) {
		t.Parallel()
		flood := `if [[ ! -e /tmp/flooded ]]; then : >/tmp/flooded; head -c 268435456 /dev/zero | tr '\0' A >/run/vagent/srcinfo; echo "flood written"; fi`
		b := newBuilder(t, e)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		var peak atomic.Uint64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		r, log := runJob(t, b, poll.Job{TargetID: 52, Kind: "url", URL: serveFile(t, pkgbuild("flood", "1", "1", flood)), Repo: newRepo(), BaseImage: e.base})
		close(stop)
		<-sampled
		if !strings.Contains(log, "flood written") {
			t.Fatalf("the flood was not written:\n%s", log)
		}
		if r.Result != poll.ResultFailure || !strings.Contains(log, "unreadable .SRCINFO") {
			t.Errorf("status %s (%s), want a failure for an unreadable .SRCINFO:\n%s", r.Result, r.Reason, log)
		}
		grew := int64(peak.Load()) - int64(base)
		t.Logf("agent heap in use: %d MiB before, peak %d MiB during a 256 MiB flood", base>>20, peak.Load()>>20)
		if grew > 64<<20 {
			t.Errorf("the agent's heap grew by %d MiB during a 256 MiB flood", grew>>20)
		}
	})

	// A length line without its newline, forged while the PKGBUILD is
	// sourced, before build.sh sends the real one (which then reads as part
	// of a length beyond what follows): the agent answers "fail" once the
	// bound from the first byte has passed, not at the job's timeout.
	t.Run("srcinfo length line without newline", func(t *testing.T) {
		t.Parallel()
		forge := `printf 12 >/run/vagent/srcinfo; echo "length forged"`
		b := newBuilder(t, e, job.WithSrcInfoWithin(2*time.Second))
		r, log := runJob(t, b, poll.Job{TargetID: 53, Kind: "url", URL: serveFile(t, pkgbuild("forge", "1", "1", forge)), Repo: newRepo(), BaseImage: e.base, Timeout: 300})
		if !strings.Contains(log, "length forged") {
			t.Fatalf("the length was not forged:\n%s", log)
		}
		wantStatus(t, r, log, poll.ResultFailure, 1)
		if !strings.HasPrefix(lastLine(log), "vagent: failure (incomplete .SRCINFO after 2s); exit code 1") || !strings.Contains(log, "vagent: incomplete .SRCINFO after 2s\n") {
			t.Errorf("reason %q, want the bound in the footer and the log:\n%s", r.Reason, log)
		}
	})

	// 256 MiB into the log: the agent keeps the first MiB (the cap set
	// here), one truncation line and its own summary.
	t.Run("log flood", func(t *testing.T) {
		t.Parallel()
		script := `	head -c 268435456 /dev/zero | tr '\0' A
	echo "flood done"`
		b := newBuilder(t, e)
		r, log := runJobLimited(t, b, poll.Job{TargetID: 60, Kind: "url", URL: serveFile(t, hostileScript("logflood", script)), Repo: newRepo(), BaseImage: e.base}, 1<<20)
		if r.Result != poll.ResultSuccess {
			t.Fatalf("status %s (%s), want success; log tail:\n%s", r.Result, r.Reason, log[max(0, len(log)-2000):])
		}
		if !strings.Contains(log, "vagent: the build's output exceeded the log limit of 1048576 bytes") {
			t.Errorf("no truncation line in the log's %d bytes", len(log))
		}
		if len(log) > 1<<20+64<<10 {
			t.Errorf("the log has %d bytes, want about 1 MiB", len(log))
		}
		if strings.Contains(log, "flood done") {
			t.Error("output after the cap reached the log")
		}
		// The footer follows the cap and names the published package.
		if cut, pub := strings.Index(log, "exceeded the log limit"), strings.LastIndex(log, "logflood-1-1-any.pkg.tar.zst"); pub < cut {
			t.Errorf("the agent's lines about the package are not after the truncation line (%d < %d)", pub, cut)
		}
	})

	// Links and FIFOs among the packages, and PKGDEST itself replaced by
	// a link to a host directory: the agent publishes the real package
	// only, or nothing, never a host file, and does not block.
	t.Run("package file links and FIFOs", func(t *testing.T) {
		t.Parallel()
		script := `	ln -s /etc/shadow /build/out/shadow-1-1-any.pkg.tar.zst || return 1
	mkfifo /build/out/fifo-1-1-any.pkg.tar.zst || return 1
	mkdir /build/out/dir-1-1-any.pkg.tar.zst || return 1
	echo planted`
		repo := newRepo()
		r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 53, Kind: "url", URL: serveFile(t, hostileScript("links", script)), Repo: repo, BaseImage: e.base})
		wantStatus(t, r, log, poll.ResultSuccess, 0)
		if !strings.Contains(log, "planted") {
			t.Fatalf("the attack did not run:\n%s", log)
		}
		if len(r.Packages) != 1 || r.Packages[0] != "links-1-1-any.pkg.tar.zst" {
			t.Errorf("published %v, want only the real package", r.Packages)
		}
		if pkgs := e.srv.Packages(repo, "x86_64"); len(pkgs) != 1 || pkgs[0].Info.Name != "links" {
			t.Errorf("repository has %+v", pkgs)
		}
	})
	// A 3 GiB sparse file named like a package beside the real one: it
	// takes nothing on the build's disk but would be uploaded whole. The
	// build fails with a line that says why, and nothing is published,
	// not even the real package.
	t.Run("sparse package", func(t *testing.T) {
		t.Parallel()
		script := `	truncate -s 3G /build/out/sparse-1-1-any.pkg.tar.zst || return 1
	echo planted`
		repo := newRepo()
		r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 62, Kind: "url", URL: serveFile(t, hostileScript("sparsepkg", script)), Repo: repo, BaseImage: e.base})
		if !strings.Contains(log, "planted") {
			t.Fatalf("the attack did not run:\n%s", log)
		}
		wantStatus(t, r, log, poll.ResultFailure, job.ExitPublish)
		if !strings.Contains(r.Reason, "sparse-1-1-any.pkg.tar.zst is a sparse file (3221225472 bytes") || !strings.Contains(lastLine(log), "sparse file") {
			t.Errorf("reason %q, last line %q: want the sparse file named", r.Reason, lastLine(log))
		}
		if n := len(e.srv.Packages(repo, "x86_64")); n != 0 {
			t.Errorf("%d packages published", n)
		}
	})
	t.Run("PKGDEST a link to a host directory", func(t *testing.T) {
		t.Parallel()
		hostDir := t.TempDir()
		script := `	rm -rf /build/out && ln -s ` + hostDir + ` /build/out || return 1
	mkdir -p ` + hostDir + ` && echo planted`
		repo := newRepo()
		r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 54, Kind: "url", URL: serveFile(t, hostileScript("pkgdest", script)), Repo: repo, BaseImage: e.base})
		if !strings.Contains(log, "planted") {
			t.Fatalf("the attack did not run:\n%s", log)
		}
		wantStatus(t, r, log, poll.ResultFailure, job.ExitPublish)
		if !strings.Contains(r.Reason, "/build/out") {
			t.Errorf("reason %q does not name /build/out", r.Reason)
		}
		if n := len(e.srv.Packages(repo, "x86_64")); n != 0 {
			t.Errorf("%d packages published through a link", n)
		}
		if ents, _ := os.ReadDir(hostDir); len(ents) > 0 {
			t.Errorf("the build wrote into the host directory: %v", ents)
		}
	})

	// A fork bomb under the pids limit: the host can still start
	// processes and serve, and the build is stopped.
	t.Run("fork bomb", func(t *testing.T) {
		t.Parallel()
		script := `	echo "bomb armed"
	bomb() { bomb | bomb & }
	while :; do bomb; done`
		b := newBuilder(t, e, job.WithLimits(sandbox.Limits{Pids: 128}))
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		w := newLogWatch("Resource temporarily unavailable")
		type ended struct{ r result }
		done := make(chan ended, 1)
		go func() {
			done <- ended{build(ctx, b, poll.Job{TargetID: 55, Kind: "url", URL: serveFile(t, hostileScript("bomb", script)), Repo: newRepo(), BaseImage: e.base, Timeout: 600}, "", poll.DefaultLogLimit, w)}
		}()
		select {
		case <-w.seen:
		case res := <-done:
			t.Fatalf("the build ended before the pids limit was hit: %s\n%s", res.r.Reason, w.String())
		}
		start := time.Now()
		if out, err := exec.Command("sh", "-c", "for i in 1 2 3 4 5 6 7 8; do /bin/true & done; wait; echo ok").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Errorf("the host cannot start processes during the bomb: %v %s", err, out)
		}
		resp, err := http.Get(e.ts.URL + "/health")
		if err == nil {
			resp.Body.Close()
		} else {
			t.Errorf("the test server does not answer during the bomb: %v", err)
		}
		t.Logf("host processes and a request took %s during the bomb", time.Since(start).Round(time.Millisecond))
		cancel()
		res := <-done
		if res.r.Result != poll.ResultCancelled {
			t.Errorf("status %s (%s), want cancelled", res.r.Result, res.r.Reason)
		}
	})

	// Filling /tmp: ENOSPC at the configured size; nothing is left.
	t.Run("filling /tmp", func(t *testing.T) {
		t.Parallel()
		data := sandboxtest.Dir(t)
		sb, err := sandbox.New(filepath.Join(data, "sandbox"), sandbox.WithSeccomp(sandbox.SeccompSupported), sandbox.WithTmpSize(16<<20))
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		b, err := job.New(sb, e.images, filepath.Join(data, "build"), job.WithServer(serverClient(t, e.ts.URL)), job.WithArch("x86_64"), netOpt())
		if err != nil {
			t.Fatal(err)
		}
		script := `	dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1 | grep -o 'No space left on device' | head -1
	echo "tmp file size $(stat -c %s /tmp/fill)"`
		r, log := runJob(t, b, poll.Job{TargetID: 56, Kind: "url", URL: serveFile(t, hostileScript("filltmp", script)), Repo: newRepo(), BaseImage: e.base})
		wantStatus(t, r, log, poll.ResultSuccess, 0)
		var size int64 = -1
		if i := strings.Index(log, "tmp file size "); i >= 0 {
			fmt.Sscan(log[i+len("tmp file size "):], &size)
		}
		if !strings.Contains(log, "No space left on device") || size < 0 || size > 16<<20 {
			t.Errorf("/tmp was not limited to 16 MiB (file of %d bytes):\n%s", size, log)
		}
		for _, d := range []string{"runs", "kept"} {
			// The sandbox Manager's instance directory (sandbox/m/<inst>).
			dirs, _ := filepath.Glob(filepath.Join(data, "sandbox", "m", "*", d))
			if len(dirs) != 1 {
				t.Errorf("sandbox/m/*/%s: %v, want the Manager's one", d, dirs)
				continue
			}
			if ents, err := os.ReadDir(dirs[0]); err != nil || len(ents) > 0 {
				t.Errorf("%s after the build: %v %v", dirs[0], ents, err)
			}
		}
	})

	// Writing twice the disk limit, in files each below it, into the
	// build directory and the package cache, then waiting: the watcher
	// stops the build, whose footer names the limit; the file system of
	// the data directory (a tmpfs of the test's own) never held much more
	// than the limit for it.
	t.Run("disk flood", func(t *testing.T) {
		t.Parallel()
		const mib = 1 << 20
		const limit = 192 * mib
		data := filepath.Join(sandboxtest.Dir(t), "data")
		mkdirs(t, data)
		mount(t, "tmpfs", data, "tmpfs", 0, "mode=0711,size=1g")
		sb, err := sandbox.New(filepath.Join(data, "sandbox"), sandbox.WithSeccomp(sandbox.SeccompSupported))
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		b, err := job.New(sb, e.images, filepath.Join(data, "build"), job.WithServer(serverClient(t, e.ts.URL)), job.WithArch("x86_64"),
			job.WithLimits(sandbox.Limits{Disk: limit}), netOpt())
		if err != nil {
			t.Fatal(err)
		}
		script := `	for i in $(seq 12); do dd if=/dev/zero of=/build/fill$i bs=1M count=16 status=none; done
	for i in $(seq 12); do sudo dd if=/dev/zero of=/var/cache/pacman/pkg/fill$i bs=1M count=16 status=none; done
	echo "flood written"
	sleep 600`
		var before unix.Statfs_t
		if err := unix.Statfs(data, &before); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		peak := make(chan int64, 1)
		go func() {
			var low uint64 = before.Bfree
			for {
				var s unix.Statfs_t
				if unix.Statfs(data, &s) == nil && s.Bfree < low {
					low = s.Bfree
				}
				select {
				case <-stop:
					peak <- int64(before.Bfree-low) * before.Bsize
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		r, log := runJob(t, b, poll.Job{TargetID: 61, Kind: "url", URL: serveFile(t, hostileScript("diskflood", script)), Repo: newRepo(), BaseImage: e.base, Timeout: 600})
		close(stop)
		grew := <-peak
		t.Logf("the data directory's file system grew by at most %d MiB during the build (limit %d MiB)", grew/mib, limit/mib)
		if r.Result != poll.ResultFailure || !strings.Contains(r.Reason, "exceeded its disk limit of 201326592 bytes") {
			t.Errorf("status %s (%s), want a failure naming the disk limit:\n%s", r.Result, r.Reason, log[max(0, len(log)-3000):])
		}
		if !strings.Contains(log, "(build_limits.disk): stopped") {
			t.Errorf("no line naming build_limits.disk in the log")
		}
		if strings.Contains(log, "flood written") {
			t.Errorf("the build wrote twice its limit before it was stopped")
		}
		if grew > limit+limit/2 {
			t.Errorf("the file system grew by %d MiB, limit %d MiB", grew/mib, limit/mib)
		}
	})

	// Two builds at once: the second searches its whole filesystem (and
	// every /proc/N/root it sees) for what the first one wrote while the
	// first one is still running.
	t.Run("another slot's upper", func(t *testing.T) {
		t.Parallel()
		mark := "vagent-marker-" + token(t)
		aReady, bDone := make(chan struct{}), make(chan struct{})
		var aOnce, bOnce sync.Once
		gate := serveHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/a-ready":
				aOnce.Do(func() { close(aReady) })
			case "/b-done":
				bOnce.Do(func() { close(bDone) })
			case "/wait-a":
				<-aReady
			case "/wait-b":
				<-bDone
			}
		}))
		defer bOnce.Do(func() { close(bDone) })
		defer aOnce.Do(func() { close(aReady) })
		scriptA := `	echo secret >/build/` + mark + ` && sudo sh -c 'echo secret >/etc/` + mark + `; echo secret >/tmp/` + mark + `' || return 1
	curl -sSf ` + gate + `/a-ready && curl -sSf --max-time 300 ` + gate + `/wait-b || return 1`
		scriptB := `	curl -sSf --max-time 300 ` + gate + `/wait-a || return 1
	sudo find / -xdev -name '` + mark + `' 2>/dev/null | sed 's/^/FOUND /'
	sudo find /proc/[0-9]*/root/ -maxdepth 3 -name '` + mark + `' 2>/dev/null | sed 's/^/FOUND /'
	echo "search done"
	curl -sSf ` + gate + `/b-done`
		var inUpper atomic.Int32
		b := newBuilder(t, e, job.WithUpperHook(func(dir string) {
			if _, err := os.Lstat(filepath.Join(dir, "build", mark)); err == nil {
				inUpper.Add(1)
			}
		}))
		var wg sync.WaitGroup
		logs := make([]string, 2)
		for i, script := range []string{scriptA, scriptB} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, log := runJob(t, b, poll.Job{TargetID: 57 + i, Kind: "url", URL: serveFile(t, hostileScript("slot"+string(rune('a'+i)), script)), Repo: newRepo(), BaseImage: e.base})
				logs[i] = log
				if r.Result != poll.ResultSuccess {
					t.Errorf("build %d: %s\n%s", i, r.Reason, log)
				}
			}()
		}
		wg.Wait()
		if !strings.Contains(logs[1], "search done") {
			t.Fatalf("the search did not run:\n%s", logs[1])
		}
		if strings.Contains(logs[1], "FOUND") {
			t.Errorf("the second build saw the first one's files:\n%s", logs[1])
		}
		if inUpper.Load() != 1 {
			t.Errorf("the marker was in %d uppers, want the first build's only", inUpper.Load())
		}
	})

	// Writes through /proc: read-only /proc/sys, no sysrq; the host's
	// value is unchanged. io_uring is refused by seccomp.
	t.Run("proc writes and io_uring", func(t *testing.T) {
		t.Parallel()
		before, err := os.ReadFile("/proc/sys/vm/swappiness")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.WriteFile("/proc/sys/vm/swappiness", before, 0o644) })
		script := `	for f in /proc/sys/vm/swappiness /proc/sysrq-trigger /proc/sys/vm/drop_caches /proc/sys/kernel/core_pattern; do
		if sudo sh -c "echo 1 >$f" 2>/dev/null; then echo "WROTE $f"; else echo "refused $f"; fi
	done
	perl -e 'my $p = "\0" x 120; my $r = syscall(425, 8, $p); print "io_uring_setup: $r ", ($r < 0 ? $! + 0 : 0), "\n"'
	sudo perl -e 'my $p = "\0" x 120; my $r = syscall(425, 8, $p); print "root io_uring_setup: $r ", ($r < 0 ? $! + 0 : 0), "\n"'`
		r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 59, Kind: "url", URL: serveFile(t, hostileScript("procw", script)), Repo: newRepo(), BaseImage: e.base})
		wantStatus(t, r, log, poll.ResultSuccess, 0)
		if strings.Contains(log, "WROTE") || !strings.Contains(log, "refused /proc/sys/vm/swappiness") {
			t.Errorf("a /proc write went through:\n%s", log)
		}
		if after, _ := os.ReadFile("/proc/sys/vm/swappiness"); !bytes.Equal(before, after) {
			t.Errorf("host swappiness changed from %s to %s", before, after)
		}
		// EPERM (1) from the filter when built with seccomp.
		for _, who := range []string{"io_uring_setup", "root io_uring_setup"} {
			want := who + ": -1 1\n"
			if !sandbox.SeccompSupported {
				continue
			}
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q:\n%s", want, log)
			}
		}
	})
}
