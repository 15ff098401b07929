package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestBuildLocalDir runs `vagent build` on a local directory, as root
// through sudo would: real makepkg in a sandbox on a builder made from the
// Arch-like image in a local registry, with base-devel and git from a
// --repo-url repository. The package lands in --out owned by SUDO_UID,
// the log streams to stdout, and the source directory is not changed.
func TestBuildLocalDir(t *testing.T) {
	t.Parallel()
	e := newLocalBuildEnv(t)
	dir := sandboxtest.Dir(t)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"sub/PKGBUILD": `pkgname=local
pkgver=0.3
pkgrel=1
pkgdesc="local test"
arch=(any)
license=(MIT)
source=(data.txt)
sha256sums=(SKIP)
package() { install -Dm644 data.txt "$pkgdir/usr/share/local/data.txt"; }
`,
		"sub/data.txt": "private data\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before := treeState(t, src)
	out := filepath.Join(dir, "out")
	var stdout, stderr bytes.Buffer
	code := execVagent(t, append(e.args(), "--path", "sub", "--out", out, src), &stdout, &stderr, "SUDO_UID=4242", "SUDO_GID=4343")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	log := stdout.String()
	// The log's header first; the digests when the builder is ready.
	for _, re := range []string{`^vagent: version: \S+\nvagent: host: \S+\nvagent: started: \S+\nvagent: repository: local\n` +
		`vagent: arch: \S+\nvagent: source: dir file://` + regexp.QuoteMeta(src) + `\nvagent: path: sub\nvagent: base image: ` + regexp.QuoteMeta(e.base) + `\n\n`,
		`(?m)^vagent: base image digest: sha256:[0-9a-f]{64}\nvagent: builder digest: sha256:[0-9a-f]{64}\n`} {
		if !regexp.MustCompile(re).MatchString(log) {
			t.Errorf("log lacks %s:\n%s", re, log)
		}
	}
	for _, want := range []string{"+ cp -a /run/vagent-src/. /build/repo", "+ cd -- /build/repo/sub", "Finished making: local 0.3-1",
		"vagent: success (wrote local-0.3-1-any.pkg.tar.zst); exit code 0"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	fi, err := os.Stat(filepath.Join(out, "local-0.3-1-any.pkg.tar.zst"))
	if err != nil {
		t.Fatalf("package not in --out: %v\n%s", err, log)
	}
	for _, p := range []string{out, filepath.Join(out, fi.Name())} {
		st, _ := os.Stat(p)
		if s := st.Sys().(*syscall.Stat_t); s.Uid != 4242 || s.Gid != 4343 {
			t.Errorf("%s owned by %d:%d, want the invoking user 4242:4343", p, s.Uid, s.Gid)
		}
	}
	if after := treeState(t, src); after != before {
		t.Errorf("source directory changed:\n%s\n---\n%s", before, after)
	}
}

// localBuildEnv is what `vagent build` tests share: an Arch-like base
// image in a local registry, a Vieter test server's repository "deps"
// holding base-devel and git for the builder, and one data directory, so
// that the builder is prepared once for the package's tests, as a
// packager's second build reuses it. It lives as long as the test binary
// (closed by TestMain). Each test keeps its sources and output in its own
// directory.
type localBuildEnv struct {
	dir, base, deps string
	registry        string // host:port of the registry holding base

	reg *testkit.Registry
	srv *vieterserver.Server // serves deps; its API key is vieterserver's default, "test-key"
	ts  *httptest.Server
}

var localBuild struct {
	once sync.Once
	e    *localBuildEnv
	err  error
}

func newLocalBuildEnv(t *testing.T) *localBuildEnv {
	t.Helper()
	testkit.RequireRoot(t)
	testkit.RequireTool(t, testkit.RegistryBinary, "docker-registry")
	testkit.ArchLike(t) // builds the image, or skips, in the test's name
	localBuild.once.Do(func() { localBuild.e, localBuild.err = startLocalBuildEnv() })
	if localBuild.err != nil {
		t.Fatalf("vagent build test environment: %v", localBuild.err)
	}
	return localBuild.e
}

func startLocalBuildEnv() (e *localBuildEnv, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e = &localBuildEnv{}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.dir, err = os.MkdirTemp("", "vagent-cmd-build-"); err != nil {
		return nil, err
	}
	if err := os.Chmod(e.dir, 0o755); err != nil {
		return nil, err
	}
	img, _, err := testkit.ArchLikeImage(ctx)
	if err != nil {
		return nil, err
	}
	if e.reg, err = testkit.StartRegistry(ctx, filepath.Join(e.dir, "registry")); err != nil {
		return nil, err
	}
	e.registry = e.reg.Host()
	e.base = e.registry + "/test/archlike:latest"
	if err := testkit.Push(ctx, img, e.base); err != nil {
		return nil, err
	}
	srv, err := vieterserver.New()
	if err != nil {
		return nil, err
	}
	e.srv = srv
	for _, name := range []string{"base-devel", "git"} {
		pkg, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: name, Version: "1-1", Arch: "any"}, nil, vieterserver.Zstd)
		if err != nil {
			return nil, err
		}
		if _, err := srv.Publish("deps", pkg); err != nil {
			return nil, err
		}
	}
	e.srv, e.ts = srv, httptest.NewServer(srv)
	e.deps = e.ts.URL + "/deps"
	return e, nil
}

// execVagent runs agentBinary with args, the test's environment with env
// ("NAME=value", …) added, stdout and stderr, and returns its exit status:
// each local build is a process of its own, as a packager's are, beside
// the others on the shared data dir.
func execVagent(tb testing.TB, args []string, stdout, stderr io.Writer, env ...string) int {
	tb.Helper()
	cmd := exec.Command(agentBinary(tb), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		tb.Fatalf("vagent %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode()
}

// close stops the servers and removes the directory.
func (e *localBuildEnv) close() {
	if e == nil {
		return
	}
	if e.ts != nil {
		e.ts.Close()
	}
	if e.reg != nil {
		_ = e.reg.Close()
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// args are the arguments of `vagent build` up to the source's flags.
func (e *localBuildEnv) args() []string {
	return []string{"build", "--data-dir", filepath.Join(e.dir, "data"), "--base-image", e.base,
		"--repo-url", e.deps, "--seccomp=" + strconv.FormatBool(sandbox.SeccompSupported), "--timeout", "10m"}
}

// testPKGBUILD is a PKGBUILD without sources that installs one file.
func testPKGBUILD(name, ver string) string {
	return "pkgname=" + name + "\npkgver=" + ver + "\npkgrel=1\npkgdesc=\"vagent build test\"\narch=(any)\nlicense=(MIT)\n" +
		"package() { mkdir -p \"$pkgdir/usr/share/$pkgname\"; echo \"$pkgver\" >\"$pkgdir/usr/share/$pkgname/version\"; }\n"
}

// TestBuildRemoteSources runs `vagent build` on the two remote kinds of
// source a job can have, each served on 127.0.0.1: a git repository (a
// branch other than the default, the PKGBUILD in a subdirectory) and a
// PKGBUILD URL. Each writes its package into --out. Until the job carried
// a repository name, both failed with `invalid job: repository name ""`.
func TestBuildRemoteSources(t *testing.T) {
	t.Parallel()
	e := newLocalBuildEnv(t)
	work := sandboxtest.Dir(t)
	g := testkit.NewGitServer(t)
	g.Commit(t, "pkgs", "", map[string]string{"README": "main branch: no PKGBUILD here\n"})
	gitURL := g.Commit(t, "pkgs", "release", map[string]string{"pkgs/fromgit/PKGBUILD": testPKGBUILD("fromgit", "1.2")})
	pkgURL := testkit.ServeFile(t, "PKGBUILD", testPKGBUILD("fromurl", "0.1"))
	for _, tc := range []struct {
		name string
		args []string
		pkg  string
		log  []string
	}{
		{"git branch and path", []string{"--branch", "release", "--path", "pkgs/fromgit", gitURL}, "fromgit-1.2-1-any.pkg.tar.zst",
			[]string{"+ git clone --single-branch --depth 1 --branch=release -- " + gitURL + " repo", "+ cd -- /build/repo/pkgs/fromgit"}},
		{"PKGBUILD URL", []string{pkgURL}, "fromurl-0.1-1-any.pkg.tar.zst",
			[]string{"--output repo/PKGBUILD --url " + pkgURL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, _, _ := strings.Cut(tc.pkg, "-")
			out := filepath.Join(work, "out-"+name)
			var stdout, stderr bytes.Buffer
			code := execVagent(t, append(append(e.args(), "--out", out), tc.args...), &stdout, &stderr)
			log := stdout.String()
			if code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, log, stderr.String())
			}
			for _, want := range append(tc.log, "vagent: success (wrote "+tc.pkg+"); exit code 0") {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}
			if _, err := os.Stat(filepath.Join(out, tc.pkg)); err != nil {
				t.Errorf("package not in --out: %v", err)
			}
		})
	}

	// With --config and nothing else: the agent's data_dir, its registry
	// mirror (the base's registry does not exist), its pacman_repos (the
	// builder's base-devel and git) and its build_timeout.
	t.Run("agent configuration", func(t *testing.T) {
		cfg := filepath.Join(work, "agent.yaml")
		yaml := "address: http://127.0.0.1:1\napi_key: " + testKey + "\ndata_dir: " + filepath.Join(e.dir, "data") + "\n" +
			"build_timeout: 10m\n" +
			"pacman_repos:\n  - name: deps\n    servers: [" + e.deps + "/$arch]\n    sig_level: Optional TrustAll\n" +
			"registries:\n  mirrors:\n    registry.invalid:5000: [http://" + e.registry + "]\n"
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(work, "out-config")
		var stdout, stderr bytes.Buffer
		code := execVagent(t, []string{"build", "--config", cfg, "--base-image", "registry.invalid:5000/test/archlike:latest",
			"--seccomp=" + strconv.FormatBool(sandbox.SeccompSupported), "--out", out, pkgURL}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		}
		if _, err := os.Stat(filepath.Join(out, "fromurl-0.1-1-any.pkg.tar.zst")); err != nil {
			t.Errorf("package not in --out: %v", err)
		}
	})

	// One Pacman cache per data dir, the one `vagent run` uses.
	if _, err := os.Stat(filepath.Join(e.dir, "data", "pacman-cache")); err != nil {
		t.Errorf("the data dir's pacman cache: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "data", "build", "pacman-cache")); err == nil {
		t.Error("vagent build made a second pacman cache, build/pacman-cache")
	}
}

// TestBuildSourceErrors: sources that cannot be built are refused before
// anything is set up (no data dir, no sandbox), with a message about the
// source; a mistyped local directory is not taken for a git URL.
func TestBuildSourceErrors(t *testing.T) {
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	empty := filepath.Join(dir, "empty")
	pkg := filepath.Join(dir, "pkg")
	for _, d := range []string{empty, pkg} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, content := range map[string]string{notes: "x\n", filepath.Join(pkg, "PKGBUILD"): "pkgname=x\n"} {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{filepath.Join(dir, "typo")}, 1, "no such file or directory"},
		{[]string{"typo"}, 1, "no such file or directory"},
		{[]string{"./sub/typo"}, 1, "no such file or directory"},
		{[]string{notes}, 1, "not a PKGBUILD"},
		{[]string{empty}, 1, "no PKGBUILD in " + empty},
		{[]string{"--path", "sub", pkg}, 1, "no PKGBUILD in " + filepath.Join(pkg, "sub")},
		{[]string{"--path", "sub", filepath.Join(pkg, "PKGBUILD")}, 2, "--path is for a directory SOURCE"},
		{[]string{"--path", "../x", pkg}, 2, "stay inside the repository"},
		{[]string{"ftp://example.org/x.git"}, 2, `scheme "ftp" not allowed`},
		{[]string{"ext::sh"}, 2, "git remote helper"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			code, _, stderr := vagent(t, append([]string{"build", "--data-dir", data}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want %d; stderr %q, want %q", code, tc.code, stderr, tc.want)
			}
			if tc.code == 1 && strings.Contains(stderr, "invalid job") {
				t.Errorf("stderr %q: a local path was taken for a URL", stderr)
			}
			if _, err := os.Stat(data); err == nil {
				t.Errorf("a refused build created its data dir")
			}
		})
	}
}

// treeState describes every file of a tree: name, mode, owner, size,
// mtime and content.
func treeState(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		b.WriteString(p + " " + fi.Mode().String() + " " + strconv.Itoa(int(st.Uid)) + " " + strconv.FormatInt(fi.Size(), 10) + " " + fi.ModTime().String())
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			b.Write(data)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestBuildInterrupted: Ctrl-C (SIGINT) stops `vagent build` with exit
// status 130 and a footer that says it was interrupted — a local build
// has no server to hand a job back to, and says nothing of one.
func TestBuildInterrupted(t *testing.T) {
	testkit.RequireRoot(t)
	bin := agentBinary(t)
	asked := make(chan struct{}, 1)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- struct{}{}:
		default:
		}
		<-r.Context().Done() // a registry that never answers
	}))
	defer hang.Close()
	dir := sandboxtest.Dir(t)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "PKGBUILD"), []byte(testPKGBUILD("x", "1")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "build", "--data-dir", filepath.Join(dir, "data"), "--seccomp="+strconv.FormatBool(sandbox.SeccompSupported),
		"--base-image", strings.TrimPrefix(hang.URL, "http://")+"/arch:1", src)
	var stdout, stderr sandboxtest.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	select {
	case <-asked:
	case <-time.After(time.Minute):
		t.Fatalf("the build never asked the registry\n%s%s", stdout.String(), stderr.String())
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("vagent build did not stop after SIGINT\n%s%s", stdout.String(), stderr.String())
	}
	out := stdout.String()
	if code := cmd.ProcessState.ExitCode(); code != 130 ||
		!regexp.MustCompile(`\nvagent: cancelled \(interrupt signal received\); exit code 130; took \S+\n$`).MatchString(out) ||
		!strings.Contains(stderr.String(), "vagent build: cancelled (interrupt signal received)") || strings.Contains(out+stderr.String(), "server") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr.String())
	}
}
