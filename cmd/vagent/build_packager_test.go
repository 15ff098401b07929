package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestBuildNextToPKGBUILD: `vagent build DIR/PKGBUILD` writes the package
// and devtools' build log next to the PKGBUILD, both the invoking user's;
// a second build does not copy them, nor its own log being written (nor
// the output directory of a third
// one with --out inside the source), into the build.
func TestBuildNextToPKGBUILD(t *testing.T) {
	t.Parallel()
	e := newLocalBuildEnv(t)
	src := filepath.Join(sandboxtest.Dir(t), "hello")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	// build() fails when an earlier build's outputs were copied in.
	pkgbuild := `pkgname=hello
pkgver=1.0
pkgrel=2
epoch=1
pkgdesc="vagent build test"
arch=(any)
license=(MIT)
build() {
	ls -A "$startdir"
	if compgen -G "$startdir/*.pkg.tar*" || compgen -G "$startdir/*-build.log" || [[ -e $startdir/out ]]; then
		echo "outputs of an earlier build were copied"; return 1
	fi
}
package() { mkdir -p "$pkgdir/usr/share/hello"; echo hi >"$pkgdir/usr/share/hello/hi"; }
`
	if err := os.WriteFile(filepath.Join(src, "PKGBUILD"), []byte(pkgbuild), 0o644); err != nil {
		t.Fatal(err)
	}
	sudo := []string{"SUDO_UID=4242", "SUDO_GID=4343"}
	pkg := filepath.Join(src, "hello-1:1.0-2-any.pkg.tar.zst")
	logFile := filepath.Join(src, "hello-1:1.0-2-x86_64-build.log")
	for round := 1; round <= 2; round++ {
		var stdout, stderr bytes.Buffer
		code := execVagent(t, append(e.args(), filepath.Join(src, "PKGBUILD")), &stdout, &stderr, sudo...)
		if code != 0 {
			t.Fatalf("round %d: exit %d\nstdout:\n%s\nstderr:\n%s", round, code, stdout.String(), stderr.String())
		}
		if !strings.Contains(stderr.String(), "build log: "+logFile) {
			t.Errorf("round %d: stderr does not name the build log %s:\n%s", round, logFile, stderr.String())
		}
		data, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !bytes.Equal(data, stdout.Bytes()) {
			t.Errorf("round %d: the build log is not what the build printed:\n%s\n---\n%s", round, data, stdout.String())
		}
		if round == 2 && !strings.Contains(stdout.String(), "without 3 output(s) of earlier builds") {
			t.Errorf("round 2: the copy did not leave the outputs out:\n%s", stdout.String())
		}
		for _, p := range []string{pkg, logFile} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4242 || st.Gid != 4343 || fi.Mode().Perm() != 0o644 {
				t.Errorf("%s: %v %d:%d, want 0644 4242:4343", p, fi.Mode(), st.Uid, st.Gid)
			}
		}
	}
	// --out inside the source: its contents stay out of the next build.
	out := filepath.Join(src, "out")
	var stdout, stderr bytes.Buffer
	if code := execVagent(t, append(e.args(), "--out", out, src), &stdout, &stderr, sudo...); code != 0 {
		t.Fatalf("--out: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if _, err := os.Stat(filepath.Join(out, filepath.Base(pkg))); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code := execVagent(t, append(e.args(), "--out", out, src), &stdout, &stderr, sudo...); code != 0 {
		t.Fatalf("--out again: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "without 3 output(s) of earlier builds") {
		t.Errorf("the copy did not leave --out and the outputs out:\n%s", stdout.String())
	}
}

// TestBuildLoadedImage: the base image loaded from a `docker save` file
// and from an OCI archive with `vagent image load`, under registry
// references whose registry is unreachable, and `vagent build` on each
// reference builds; with standard error on a terminal, the base image's
// layers are shown as they are unpacked.
func TestBuildLoadedImage(t *testing.T) {
	t.Parallel()
	e := newLocalBuildEnv(t)
	img, layoutDir, err := testkit.ArchLikeImage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	work := sandboxtest.Dir(t)
	dockerFile := filepath.Join(work, "arch.docker.tar")
	tag, _ := name.NewTag("vagent-test/archlike:loaded")
	if err := tarball.WriteToFile(dockerFile, tag, img); err != nil {
		t.Fatal(err)
	}
	ociFile := filepath.Join(work, "arch.oci.tar")
	if out, err := exec.Command("tar", "-C", layoutDir, "-cf", ociFile, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	// Nothing listens there: the registry of the loaded names is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	data := filepath.Join(e.dir, "data")
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "PKGBUILD"), []byte(testPKGBUILD("loaded", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, ref string }{
		{dockerFile, dead + "/loaded/docker:1"},
		{ociFile, dead + "/loaded/oci:1"},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			code, stdout, stderr := vagent(t, "image", "load", "--data-dir", data, "--tag", tc.ref, tc.file)
			if code != 0 || !strings.Contains(stdout, "loaded "+tc.ref) {
				t.Fatalf("image load: exit %d\n%s\n%s", code, stdout, stderr)
			}
			ptm, pts := openPTY(t)
			read := make(chan string)
			go func() {
				b, _ := io.ReadAll(ptm)
				read <- string(b)
			}()
			args := append(e.args(), "--out", filepath.Join(work, "out"), src)
			for i, a := range args {
				if a == "--base-image" {
					args[i+1] = tc.ref
				}
			}
			var out bytes.Buffer
			code = execVagent(t, args, &out, pts, "TERM=xterm")
			pts.Close()
			term := strings.ReplaceAll(<-read, "\r\n", "\n")
			if code != 0 {
				t.Fatalf("build on %s: exit %d\n%s\nterminal:\n%s", tc.ref, code, out.String(), term)
			}
			if !strings.Contains(term, "registry unreachable, using the image pulled") {
				t.Errorf("the build did not say it used the loaded image:\n%s", term)
			}
			if _, err := os.Stat(filepath.Join(work, "out", "loaded-1-1-any.pkg.tar.zst")); err != nil {
				t.Error(err)
			}
			if strings.Contains(tc.file, "docker") {
				// A manifest of its own: its tree is unpacked, with bars.
				wantUnpackedBars(t, screen(term), 3)
			}
		})
	}
}

// TestBuildInstallLocal: -I installs a locally built dependency into the
// build before its dependencies are resolved, so a package that needs it
// builds with no repository holding it.
func TestBuildInstallLocal(t *testing.T) {
	t.Parallel()
	e := newLocalBuildEnv(t)
	work := sandboxtest.Dir(t)
	write := func(dir, content string) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "PKGBUILD"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dep := write(filepath.Join(work, "localdep"), testPKGBUILD("localdep", "2.5"))
	var stdout, stderr bytes.Buffer
	if code := execVagent(t, append(e.args(), dep), &stdout, &stderr); code != 0 {
		t.Fatalf("dependency: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	depPkg := filepath.Join(dep, "localdep-2.5-1-any.pkg.tar.zst")
	needs := write(filepath.Join(work, "needs"), `pkgname=needs
pkgver=1
pkgrel=1
arch=(any)
license=(MIT)
depends=(localdep)
build() { cat /usr/share/localdep/version; }
package() { mkdir -p "$pkgdir/usr/share/needs"; }
`)
	stdout.Reset()
	stderr.Reset()
	code := execVagent(t, append(e.args(), "-I", depPkg, needs), &stdout, &stderr)
	log := stdout.String()
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, log, stderr.String())
	}
	for _, want := range []string{"+ pacman -U --noconfirm -- /run/vagent/install/localdep-2.5-1-any.pkg.tar.zst",
		"\n2.5\n", "vagent: success (wrote needs-1-1-any.pkg.tar.zst)"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// TestBuildCheck: --check compares the package built with the older
// version the build's repository holds (fixture packages with real shared
// libraries): a file added and one removed, the soname provided changed,
// a soname needed added.
func TestBuildCheck(t *testing.T) {
	t.Parallel()
	e := newLocalBuildEnv(t)
	testkit.RequireTool(t, "gcc", "build-essential")
	work := sandboxtest.Dir(t)
	// Two versions of a library: the soname changes, and 2 needs libm.
	lib := func(soname string, args ...string) []byte {
		t.Helper()
		c := filepath.Join(work, "demo.c")
		if err := os.WriteFile(c, []byte("#include <math.h>\ndouble demo(double x) { return sqrt(x); }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(work, soname)
		cmd := exec.Command("gcc", append([]string{"-shared", "-fPIC", "-Wl,--no-as-needed", "-Wl,-soname," + soname, "-o", out, c}, args...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, b)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	old := lib("libdemo.so.1")
	newer := lib("libdemo.so.2", "-lm")
	pkg, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "vagent-check-demo", Version: "1.0-1", Arch: "x86_64"},
		map[string]string{"usr/lib/libdemo.so.1": string(old), "usr/share/demo/README": "demo\n"}, vieterserver.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Publish("deps", pkg); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "libdemo.so.2"), newer, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "PKGBUILD"), []byte(`pkgname=vagent-check-demo
pkgver=1.1
pkgrel=1
arch=(x86_64)
license=(MIT)
source=(libdemo.so.2)
sha256sums=(SKIP)
package() {
	install -Dm755 libdemo.so.2 "$pkgdir/usr/lib/libdemo.so.2"
	mkdir -p "$pkgdir/usr/share/demo"
	echo demo >"$pkgdir/usr/share/demo/README"
	echo news >"$pkgdir/usr/share/demo/NEWS"
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := execVagent(t, append(e.args(), "--check", src), &stdout, &stderr)
	log := stdout.String()
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, log, stderr.String())
	}
	var report []string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "  ") && strings.Contains(l, ": ") && (strings.Contains(l, "file ") || strings.Contains(l, "soname ")) {
			report = append(report, l)
		}
	}
	want := []string{
		"  file added: usr/lib/libdemo.so.2",
		"  file added: usr/share/demo/NEWS",
		"  file removed: usr/lib/libdemo.so.1",
		"  soname provided added: libdemo.so.2",
		"  soname provided removed: libdemo.so.1",
		"  soname needed added: libm.so.6",
	}
	if strings.Join(report, "\n") != strings.Join(want, "\n") {
		t.Errorf("check report:\n%s\nwant:\n%s\nlog:\n%s", strings.Join(report, "\n"), strings.Join(want, "\n"), log)
	}
	for _, w := range []string{"vagent: check: vagent-check-demo 1.1-1 against 1.0-1 in repository deps",
		"vagent: check: the sonames vagent-check-demo provides changed"} {
		if !strings.Contains(log, w) {
			t.Errorf("log lacks %q:\n%s", w, log)
		}
	}
}

// TestBuildInspect drives `vagent build --inspect failure` through a
// pseudo-terminal, as a packager at a terminal: the build fails, a shell
// as the builder opens in the PKGBUILD's directory of the failed tree,
// what is typed runs there, and `exit` ends it; then nothing of the build
// is left (no mount, sandbox directory, cgroup or process) and the exit
// status is the build's.
func TestBuildInspect(t *testing.T) {
	// Not parallel: it checks that nothing of any build is left in the
	// shared data dir, which the parallel tests are still using.
	e := newLocalBuildEnv(t)
	bin := agentBinary(t)
	src := filepath.Join(sandboxtest.Dir(t), "broken")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "PKGBUILD"), []byte(`pkgname=broken
pkgver=1
pkgrel=1
arch=(any)
license=(MIT)
build() { echo "half-built by $(id -un)" >"$srcdir/marker"; return 1; }
package() { :; }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ptm, pts := openPTY(t)
	cmd := exec.Command(bin, append(e.args(), "--inspect", "failure", src)...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	tr := newTranscript(ptm)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	tr.waitFor(t, "[vagent inspect repo]$ ", exited)
	if _, err := io.WriteString(ptm, "cat src/marker; echo typed-$((6*7)) in $PWD\r"); err != nil {
		t.Fatal(err)
	}
	tr.waitFor(t, "typed-42 in /build/repo", exited)
	if _, err := io.WriteString(ptm, "exit\r"); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("vagent did not end after the shell's exit:\n%s", tr.String())
	}
	select {
	case <-tr.eof: // all vagent wrote is read
	case <-time.After(10 * time.Second):
		t.Errorf("the terminal is still open after vagent ended")
	}
	out := tr.String()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Errorf("vagent build ended with %v, want the build's exit status 4:\n%s", err, out)
	}
	for _, want := range []string{
		"vagent build: failure (build() failed: makepkg exit status 4, a function of the PKGBUILD failed); a shell in its tree follows",
		"vagent: a shell as builder in /build/repo",
		"half-built by builder",
		"vagent build: the shell exited with status 0; the build's tree is removed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the terminal lacks %q:\n%s", want, out)
		}
	}
	data := filepath.Join(e.dir, "data")
	for _, l := range buildLeftovers(t, data) {
		t.Errorf("left behind: %s", l)
	}
}

// transcript collects what a terminal shows.
type transcript struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	more chan struct{}
	eof  chan struct{} // the terminal's last writer closed it
}

func newTranscript(r io.Reader) *transcript {
	tr := &transcript{more: make(chan struct{}, 1), eof: make(chan struct{})}
	go func() {
		defer close(tr.eof)
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			tr.mu.Lock()
			tr.buf.Write(b[:n])
			tr.mu.Unlock()
			select {
			case tr.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return tr
}

func (tr *transcript) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return strings.ReplaceAll(tr.buf.String(), "\r\n", "\n")
}

// waitFor waits until the terminal shows s, failing when the command
// exits first or 3 minutes pass (the build comes first).
func (tr *transcript) waitFor(t *testing.T, s string, exited <-chan error) {
	t.Helper()
	deadline := time.After(3 * time.Minute)
	for !strings.Contains(tr.String(), s) {
		select {
		case <-tr.more:
		case err := <-exited:
			t.Fatalf("vagent ended (%v) before the terminal showed %q:\n%s", err, s, tr.String())
		case <-deadline:
			t.Fatalf("the terminal did not show %q:\n%s", s, tr.String())
		}
	}
}

// buildLeftovers lists what builds of the data dir left: mounts below it,
// entries of the sandbox's state, runs and kept directories, processes
// whose root is below it, and the sandbox's cgroup parents
// (vagent-<sha256 of the sandbox directory>, sandbox.New's name).
func buildLeftovers(t *testing.T, data string) []string {
	t.Helper()
	var l []string
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], data+"/") {
			l = append(l, "mount "+f[4])
		}
	}
	sb := filepath.Join(data, "sandbox")
	_ = filepath.WalkDir(sb, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		switch d.Name() {
		case "state", "runs", "kept":
			entries, _ := os.ReadDir(p)
			for _, e := range entries {
				l = append(l, "sandbox "+filepath.Join(p, e.Name()))
			}
			return filepath.SkipDir
		}
		return nil
	})
	roots, _ := filepath.Glob("/proc/[0-9]*/root")
	for _, r := range roots {
		if target, err := os.Readlink(r); err == nil && strings.HasPrefix(target, data+"/") {
			cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(r), "cmdline"))
			l = append(l, fmt.Sprintf("process %s %q", filepath.Dir(r), cmdline))
		}
	}
	real, err := filepath.EvalSymlinks(sb)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(real))
	parent := "vagent-" + hex.EncodeToString(sum[:6])
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
	cgs2, _ := filepath.Glob("/sys/fs/cgroup/" + parent)
	for _, c := range append(cgs, cgs2...) {
		l = append(l, "cgroup "+c)
	}
	return l
}

// TestBuildSourceCache: the second build of a package with remote
// sources downloads nothing again: its file comes from the source cache
// (the server counts requests), its git source's bare mirror is updated,
// not cloned again.
func TestBuildSourceCache(t *testing.T) {
	t.Parallel()
	e := newLocalBuildEnv(t)
	var downloads atomic.Int32
	const data = "cached source data\n"
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/data.txt" {
			http.NotFound(w, r)
			return
		}
		downloads.Add(1)
		_, _ = io.WriteString(w, data)
	}))
	t.Cleanup(files.Close)
	g := testkit.NewGitServer(t)
	gitURL := g.Commit(t, "upstream", "", map[string]string{"README": "upstream\n"})
	sum := sha256.Sum256([]byte(data))
	src := filepath.Join(sandboxtest.Dir(t), "cached")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "PKGBUILD"), []byte(`pkgname=cached
pkgver=1
pkgrel=1
arch=(any)
license=(MIT)
source=("data.txt::`+files.URL+`/data.txt" "upstream::git+`+gitURL+`")
sha256sums=('`+hex.EncodeToString(sum[:])+`' 'SKIP')
package() {
	install -Dm644 data.txt "$pkgdir/usr/share/cached/data.txt"
	install -Dm644 upstream/README "$pkgdir/usr/share/cached/README"
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for round, want := range []string{"Cloning upstream git repo", "Updating upstream git repo"} {
		var stdout, stderr bytes.Buffer
		// The PKGBUILD's servers on the host's loopback, let in.
		args := append(e.args(), "--forward", strings.TrimPrefix(files.URL, "http://"), "--forward", hostPort(t, gitURL), src)
		if code := execVagent(t, args, &stdout, &stderr); code != 0 {
			t.Fatalf("build %d: exit %d\n%s\n%s", round+1, code, stdout.String(), stderr.String())
		}
		if n := downloads.Load(); n != 1 {
			t.Errorf("after build %d: %d downloads of data.txt, want 1", round+1, n)
		}
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("build %d: log lacks %q:\n%s", round+1, want, stdout.String())
		}
		if round == 1 && !strings.Contains(stdout.String(), "Found data.txt") {
			t.Errorf("build 2 did not find data.txt in the source cache:\n%s", stdout.String())
		}
	}
}

// hostPort is the host:port of an http URL.
func hostPort(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p.Host
}
