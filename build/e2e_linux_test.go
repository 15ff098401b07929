package build_test

import (
	"strings"
	"testing"

	"github.com/vieter-v/vagent/poll"
)

// TestGitBranchPath builds from a git repository served on 127.0.0.1: a
// branch other than the default one, with the PKGBUILD in a
// subdirectory. The package is published and the log announces each step.
func TestGitBranchPath(t *testing.T) {
	e := setup(t)
	g := newGitServer(t)
	g.commit(t, "pkgs", "", map[string]string{"README": "main branch\n"})
	url := g.commit(t, "pkgs", "release", map[string]string{"pkgs/hello/PKGBUILD": pkgbuild("hello", "1.2", "3")})
	repo := newRepo()
	b := newBuilder(t, e)
	r, log := runJob(t, b, poll.Job{TargetID: 1, Kind: "git", URL: url, Branch: "release", Path: "pkgs/hello", Repo: repo, BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	for _, want := range []string{"+ git clone --single-branch --depth 1 --branch=release -- " + url + " repo", "+ cd -- /build/repo/pkgs/hello", "+ makepkg --nobuild", "building hello", "+ vagent: publish hello-1.2-3-any.pkg.tar.zst"} {
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
