package job_test

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestGitBranchPath builds from a git repository served on 127.0.0.1: a
// branch other than the default one, with the PKGBUILD in a
// subdirectory. The package is published and the log announces each step.
func TestGitBranchPath(t *testing.T) {
	e := setup(t)
	g := testkit.NewGitServer(t)
	g.Commit(t, "pkgs", "", map[string]string{"README": "main branch\n"})
	url := g.Commit(t, "pkgs", "release", map[string]string{"pkgs/hello/PKGBUILD": pkgbuild("hello", "1.2", "3")})
	repo := newRepo()
	b := newBuilder(t, e, netOpt(url)) // the git server: forwarded
	r, log := runJob(t, b, poll.Job{TargetID: 1, Kind: "git", URL: url, Branch: "release", Path: "pkgs/hello", Repo: repo, BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	for _, want := range []string{"+ git clone --single-branch --depth 1 --branch=release -- " + url + " repo", "+ cd -- /build/repo/pkgs/hello", "+ MAKEFLAGS=", "building hello", "+ vagent: publish hello-1.2-3-any.pkg.tar.zst"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if got := lastLine(log); !strings.HasPrefix(got, "vagent: success (published hello-1.2-3-any.pkg.tar.zst); exit code 0; took ") {
		t.Errorf("summary line %q", got)
	}
	pkgs := e.srv.Packages(repo, "x86_64")
	if len(pkgs) != 1 || pkgs[0].Info.Name != "hello" || pkgs[0].Info.Version != "1.2-3" {
		t.Errorf("repository has %+v", pkgs)
	}
}

// TestURLSource downloads the PKGBUILD from a URL into an empty directory.
func TestURLSource(t *testing.T) {
	t.Parallel()
	e := setup(t)
	url := serveFile(t, pkgbuild("fromurl", "0.1", "1"))
	repo := newRepo()
	r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 2, Kind: "url", URL: url, Repo: repo, BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	if !strings.Contains(log, "+ mkdir repo\n+ curl ") || !strings.Contains(log, "--output repo/PKGBUILD --url "+url+"\n") {
		t.Errorf("log does not announce the download:\n%s", log)
	}
	if pkgs := e.srv.Packages(repo, "x86_64"); len(pkgs) != 1 || pkgs[0].Info.Name != "fromurl" {
		t.Errorf("repository has %+v", pkgs)
	}
}

// progressLog records what a job reports besides its log.
type progressLog struct {
	mu     sync.Mutex
	phases []poll.Phase
	header map[string]string
}

func (p *progressLog) Phase(ph poll.Phase) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.phases) == 0 || p.phases[len(p.phases)-1] != ph {
		p.phases = append(p.phases, ph)
	}
}

func (p *progressLog) Header(k, v string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.header[k] = v
}

// TestProgressReported: a build reports its phases (building, then
// publishing) and, for the log's header, the digests of its base image and
// of the builder it ran on — the one builder on disk.
func TestProgressReported(t *testing.T) {
	t.Parallel()
	e := setup(t)
	warmBuilder(t, e)
	url := serveFile(t, pkgbuild("progress", "0.1", "1"))
	p := &progressLog{header: map[string]string{}}
	var log sandboxtest.Buffer
	r := build(poll.WithProgress(t.Context(), p), newBuilder(t, e), poll.Job{TargetID: 9, Kind: "url", URL: url, Repo: newRepo(), BaseImage: e.base}, "", 0, &log)
	wantStatus(t, r, log.String(), poll.ResultSuccess, 0)
	infos, err := e.bm.List()
	if err != nil || len(infos) == 0 {
		t.Fatalf("builders %v: %v", infos, err)
	}
	var cur builder.Info
	for _, in := range infos {
		if in.Current {
			cur = in
		}
	}
	if p.header["builder digest"] != cur.Digest.String() || p.header["base image digest"] != cur.BaseDigest.String() || p.header["builder prepared"] == "" {
		t.Errorf("header fields %v, want the current builder %s of base %s", p.header, cur.Digest, cur.BaseDigest)
	}
	if n := len(p.phases); n < 2 || p.phases[n-2] != poll.PhaseBuilding || p.phases[n-1] != poll.PhasePublishing {
		t.Errorf("phases %v, want … building, publishing", p.phases)
	}
}

// TestPKGBUILDOutputIsNotSrcInfo: what a PKGBUILD prints while it is read
// goes to the log and cannot pose as .SRCINFO fields (here a line that
// would add a package name): the build reads the real fields, builds and
// publishes the one package.
func TestPKGBUILDOutputIsNotSrcInfo(t *testing.T) {
	t.Parallel()
	e := setup(t)
	url := serveFile(t, pkgbuild("chatty", "0.2", "1", `echo "pkgname = impostor"`))
	repo := newRepo()
	r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 3, Kind: "url", URL: url, Repo: repo, BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	if !strings.Contains(log, "+ srcinfo\npkgname = impostor\n") {
		t.Errorf("the PKGBUILD's output is not in the log after + srcinfo:\n%s", log)
	}
	if pkgs := e.srv.Packages(repo, "x86_64"); len(pkgs) != 1 || pkgs[0].Info.Name != "chatty" || pkgs[0].Info.Version != "0.2-1" {
		t.Errorf("repository has %+v", pkgs)
	}
}

const splitPKGBUILD = `pkgbase=split
pkgname=(split-a split-b)
pkgver=3.1
pkgrel=2
pkgdesc="vagent split test package"
arch=(any)
license=(MIT)
package_split-a() { mkdir -p "$pkgdir/usr/share/a"; echo a >"$pkgdir/usr/share/a/a"; }
package_split-b() { mkdir -p "$pkgdir/usr/share/b"; echo b >"$pkgdir/usr/share/b/b"; }
`

// TestSplitSkipForce builds a split package (every package is published),
// skips the second build of the same version, builds it again when forced,
// and builds again when only one of the packages is in the repository.
func TestSplitSkipForce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	g := testkit.NewGitServer(t)
	url := g.Commit(t, "split", "", map[string]string{"PKGBUILD": splitPKGBUILD})
	repo := newRepo()
	b := newBuilder(t, e, netOpt(url))
	j := poll.Job{TargetID: 3, Kind: "git", URL: url, Repo: repo, BaseImage: e.base}

	r, log := runJob(t, b, j)
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	want := []string{"split-a-3.1-2-any.pkg.tar.zst", "split-b-3.1-2-any.pkg.tar.zst"}
	if strings.Join(r.Packages, " ") != strings.Join(want, " ") {
		t.Errorf("published %q, want %q", r.Packages, want)
	}
	if pkgs := e.srv.Packages(repo, "x86_64"); len(pkgs) != 2 {
		t.Fatalf("repository has %+v", pkgs)
	}
	if r.SrcInfo == nil || r.SrcInfo.Base != "split" || r.SrcInfo.FullVersion() != "3.1-2" {
		t.Errorf("srcinfo %+v", r.SrcInfo)
	}

	// Other tests publish to the shared server at the same time: compare
	// this repository's packages, not the server's request count.
	before := e.srv.Packages(repo, "x86_64")
	r, log = runJob(t, b, j)
	wantStatus(t, r, log, poll.ResultSkipped, 0)
	if !strings.Contains(log, "vagent: skipping the build: split-a, split-b 3.1-2 already in repository "+repo) {
		t.Errorf("log does not say why it skipped:\n%s", log)
	}
	if strings.Contains(log, "Starting build()") || strings.Contains(log, "Creating package") {
		t.Errorf("skipped build built:\n%s", log)
	}
	if !strings.HasPrefix(lastLine(log), "vagent: skipped (") {
		t.Errorf("summary %q", lastLine(log))
	}
	if after := e.srv.Packages(repo, "x86_64"); !reflect.DeepEqual(after, before) {
		t.Errorf("skipped build changed the repository:\n%+v\nwas\n%+v", after, before)
	}
	if len(r.Packages) != 0 {
		t.Errorf("skipped build published %q", r.Packages)
	}

	j.Force = true
	r, log = runJob(t, b, j)
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	if len(r.Packages) != 2 {
		t.Errorf("forced build published %q", r.Packages)
	}

	// Only split-a at this version in another repository: build.
	repo2 := newRepo()
	onlyA, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: "split-a", Base: "split", Version: "3.1-2", Arch: "any"}, nil, vieterserver.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Publish(repo2, onlyA); err != nil {
		t.Fatal(err)
	}
	j.Force, j.Repo = false, repo2
	r, log = runJob(t, b, j)
	wantStatus(t, r, log, poll.ResultSuccess, 0)
}

// TestEpoch publishes a package with an epoch and skips its second build:
// the skip check asks for <pkgname>-<epoch>:<pkgver>-<pkgrel>.
func TestEpoch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	url := serveFile(t, pkgbuild("withepoch", "1.0", "1", "epoch=2"))
	repo := newRepo()
	b := newBuilder(t, e)
	j := poll.Job{TargetID: 4, Kind: "url", URL: url, Repo: repo, BaseImage: e.base}
	r, log := runJob(t, b, j)
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	pkgs := e.srv.Packages(repo, "x86_64")
	if len(pkgs) != 1 || pkgs[0].Info.Version != "2:1.0-1" {
		t.Fatalf("repository has %+v", pkgs)
	}
	if r.SrcInfo.FullVersion() != "2:1.0-1" {
		t.Errorf("version %q", r.SrcInfo.FullVersion())
	}
	r, log = runJob(t, b, j)
	wantStatus(t, r, log, poll.ResultSkipped, 0)
	if !strings.Contains(log, "withepoch 2:1.0-1 already in repository") {
		t.Errorf("log:\n%s", log)
	}
}

// TestFailingBuild reports a failing build() with makepkg's exit code and
// its complete log, names the step that failed and what makepkg's exit
// status means, and publishes nothing.
func TestFailingBuild(t *testing.T) {
	t.Parallel()
	e := setup(t)
	url := serveFile(t, strings.Replace(pkgbuild("broken", "1", "1"), `build() { echo "building $pkgname"; }`,
		`build() { echo "output before the failure"; echo "on stderr" >&2; return 3; }`, 1))
	repo := newRepo()
	r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 5, Kind: "url", URL: url, Repo: repo, BaseImage: e.base})
	if r.Result != poll.ResultFailure || r.ExitCode != 4 {
		t.Fatalf("status %s exit %d, want a failure with makepkg's 4:\n%s", r.Result, r.ExitCode, log)
	}
	for _, want := range []string{"+ MAKEFLAGS=", "output before the failure", "on stderr", "A failure occurred in build()"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	want := "vagent: failure (build() failed: makepkg exit status 4, a function of the PKGBUILD failed); exit code 4; took "
	if got := lastLine(log); !strings.HasPrefix(got, want) {
		t.Errorf("summary %q, want %q...", got, want)
	}
	if pkgs := e.srv.Packages(repo, "x86_64"); len(pkgs) != 0 {
		t.Errorf("failed build published %+v", pkgs)
	}
}

// TestFailureSteps: a failed build's footer names the step that failed —
// the clone, the path, the sources, the dependencies, a function of the
// PKGBUILD — and what makepkg's exit status means.
func TestFailureSteps(t *testing.T) {
	e := setup(t)
	g := testkit.NewGitServer(t)
	gitURL := g.Commit(t, "steps", "", map[string]string{"pkg/PKGBUILD": pkgbuild("steps", "1", "1")})
	replace := func(from, to string) string {
		return strings.Replace(pkgbuild("steps", "1", "1"), from, to, 1)
	}
	for _, tc := range []struct {
		name string
		job  poll.Job
		code int
		want string
	}{
		{"clone", poll.Job{Kind: "git", URL: gitURL + "-missing"}, 128, "git clone failed with exit status 128"},
		{"path", poll.Job{Kind: "git", URL: gitURL, Path: "nope"}, 1, "the path is not in the repository"},
		{"no PKGBUILD", poll.Job{Kind: "git", URL: gitURL}, 1, "the source has no PKGBUILD"},
		{"sources", poll.Job{Kind: "url", URL: serveFile(t, replace("license=(MIT)", "license=(MIT)\nsource=(http://127.0.0.1:1/gone.tar.gz)\nsha256sums=(SKIP)"))},
			1, "the sources failed (download, checksums, signatures or extraction): makepkg exit status 1, an error"},
		{"dependencies", poll.Job{Kind: "url", URL: serveFile(t, replace("license=(MIT)", "license=(MIT)\ndepends=(no-such-package)"))},
			8, "installing the dependencies failed: makepkg exit status 8, the dependencies could not be installed"},
		{"package()", poll.Job{Kind: "url", URL: serveFile(t, replace(`mkdir -p "$pkgdir/usr/share/$pkgname"`, "false"))},
			4, "package() failed: makepkg exit status 4, a function of the PKGBUILD failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := tc.job
			j.TargetID, j.Repo, j.BaseImage = 50, newRepo(), e.base
			r, log := runJob(t, newBuilder(t, e, netOpt(gitURL)), j)
			wantStatus(t, r, log, poll.ResultFailure, tc.code)
			want := fmt.Sprintf("vagent: failure (%s); exit code %d; took ", tc.want, tc.code)
			if got := lastLine(log); !strings.HasPrefix(got, want) {
				t.Errorf("summary %q, want %q...\n%s", got, want, log)
			}
		})
	}
}

// TestDumbHTTPGit builds from a git server that speaks the dumb HTTP
// protocol (static files): the shallow clone it cannot serve is retried
// in full, saying why.
func TestDumbHTTPGit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	g := testkit.NewDumbGitServer(t)
	url := g.Commit(t, "dumb", "", map[string]string{"PKGBUILD": pkgbuild("dumb", "1", "1")})
	r, log := runJob(t, newBuilder(t, e, netOpt(url)), poll.Job{TargetID: 51, Kind: "git", URL: url, Repo: newRepo(), BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	for _, want := range []string{"dumb http transport does not support shallow", "vagent: the server speaks git's dumb HTTP protocol, which cannot clone shallow: cloning the whole history",
		"+ git clone --single-branch -- " + url + " repo", "+ vagent: publish dumb-1-1-any.pkg.tar.zst"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// TestTimeout kills a build that runs past the job's timeout, near the
// deadline, and says so in the log.
func TestTimeout(t *testing.T) {
	t.Parallel()
	e := setup(t)
	url := serveFile(t, strings.Replace(pkgbuild("slow", "1", "1"), `build() { echo "building $pkgname"; }`,
		`build() { echo "sleeping"; sleep 600 & sleep 600; }`, 1))
	// The deadline covers the whole job, the builder's preparation too:
	// prepare it first, so the short timeout meets the build itself.
	warmBuilder(t, e)
	const timeout = 15
	r, log := runJob(t, newBuilder(t, e), poll.Job{TargetID: 6, Kind: "url", URL: url, Repo: newRepo(), BaseImage: e.base, Timeout: timeout})
	wantStatus(t, r, log, poll.ResultTimeout, poll.ExitTimeout)
	took := r.End.Sub(r.Start)
	if took < timeout*time.Second || took > timeout*time.Second+5*time.Second {
		t.Errorf("build took %s, want just over %d s", took, timeout)
	}
	if !strings.Contains(log, "+ curl ") {
		t.Errorf("log lost the output before the timeout:\n%s", log)
	}
	if got := lastLine(log); !strings.HasPrefix(got, fmt.Sprintf("vagent: timeout after %d s; exit code %d; took ", timeout, poll.ExitTimeout)) {
		t.Errorf("summary %q", got)
	}
}

// TestDependencyFromRepository builds A into an empty repository (no
// database yet), then B, which depends on A: pacman installs A from the
// job's repository.
func TestDependencyFromRepository(t *testing.T) {
	t.Parallel()
	e := setup(t)
	repo := newRepo()
	b := newBuilder(t, e)
	urlA := serveFile(t, pkgbuild("dep-a", "1", "1"))
	r, log := runJob(t, b, poll.Job{TargetID: 7, Kind: "url", URL: urlA, Repo: repo, BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	if !strings.Contains(log, "repository "+repo+" has no database") {
		t.Errorf("log does not explain the missing database:\n%s", log)
	}
	urlB := serveFile(t, strings.Replace(pkgbuild("dep-b", "1", "1", "depends=(dep-a)"), `build() { echo "building $pkgname"; }`,
		`build() { cat /usr/share/dep-a/version; pacman -Qi dep-a | grep -E '^(Name|Install Reason)'; }`, 1))
	r, log = runJob(t, b, poll.Job{TargetID: 8, Kind: "url", URL: urlB, Repo: repo, BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	for _, want := range []string{"[" + repo + "]\nSigLevel = Optional\nServer = " + e.ts.URL + "/$repo/$arch\n", "installing dep-a", "Name            : dep-a"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	names := ""
	for _, p := range e.srv.Packages(repo, "x86_64") {
		names += p.Info.Name + " "
	}
	if names != "dep-a dep-b " {
		t.Errorf("repository has %s", names)
	}
}

// TestEachRepositoryOnce: the builder image has the configured repository
// "deps"; the job's repository is "deps" too, and an extra repository with
// two servers is added per build. The build's pacman.conf has each
// repository once (the extra one with both servers in one section), and
// pacman never says "database already registered".
func TestEachRepositoryOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, repo := range []string{"deps", "extra"} {
		data, err := vieterserver.MakePackage(vieterserver.PkgInfo{Name: repo + "-marker", Version: "1-1", Arch: "any"}, map[string]string{"usr/share/m": "m\n"}, vieterserver.Zstd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.srv.Publish(repo, data); err != nil {
			t.Fatal(err)
		}
	}
	server := e.ts.URL + "/$repo/$arch"
	b := newBuilder(t, e, job.WithRepos(
		pacman.Repo{Name: "extra", Servers: []string{server, server + "/"}, SigLevel: "Optional TrustAll"},
		pacman.Repo{Name: "deps", Servers: []string{server}}))
	// The job builds into "deps": a package name of its own, so that a
	// second run of the test (-count) is not skipped as already there.
	name := "once-" + newRepo()
	url := serveFile(t, strings.Replace(pkgbuild(name, "1", "1"), `build() { echo "building $pkgname"; }`,
		`build() { for r in deps extra; do echo "sections $r: $(grep -cxF "[$r]" /etc/pacman.conf)"; done; echo "servers: $(grep -c '^Server = .*/\$repo/\$arch/\?$' /etc/pacman.conf)"; }`, 1))
	r, log := runJob(t, b, poll.Job{TargetID: 30, Kind: "url", URL: url, Repo: "deps", BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	for _, want := range []string{"sections deps: 1", "sections extra: 1", "vagent: [deps] is in pacman.conf already; not added again"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "already registered") {
		t.Errorf("pacman registered a database twice:\n%s", log)
	}
}
