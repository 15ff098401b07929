package job_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
)

// TestMakepkgPasses: a PKGBUILD without pkgver() is built with one makepkg
// run, the agent deciding before makepkg from the PKGBUILD as sourced; a
// PKGBUILD with pkgver() (a VCS PKGBUILD: its version comes from its git
// source) keeps the makepkg --nobuild pass before the decision. Each kind
// publishes the same packages at the same version as before, and the
// second build of each is skipped, the single-pass ones without running
// makepkg at all; the VCS one builds again once its source has a new
// commit. The forced two-pass flow (the flow of earlier versions) gives the
// same packages.
func TestMakepkgPasses(t *testing.T) {
	e := setup(t)
	g := testkit.NewGitServer(t)
	upstream := g.Commit(t, "upstream", "", map[string]string{"README": "1\n"})
	vcs := `pkgname=vcs-git
pkgver=0
pkgrel=1
arch=(any)
license=(MIT)
source=("upstream::git+` + upstream + `")
sha256sums=(SKIP)
pkgver() { printf '1.r%s' "$(git -C "$srcdir/upstream" rev-list --count HEAD)"; }
package() { install -Dm644 "$srcdir/upstream/README" "$pkgdir/usr/share/vcs-git/README"; }
`
	for _, tc := range []struct {
		name     string
		pkgbuild string
		passes   int      // makepkg runs of a build
		held     []string // "name version" published
	}{
		{"plain", pkgbuild("plain", "1.0", "1"), 1, []string{"plain 1.0-1"}},
		{"epoch", pkgbuild("epochal", "1.0", "2", "epoch=3"), 1, []string{"epochal 3:1.0-2"}},
		{"split", splitPKGBUILD, 1, []string{"split-a 3.1-2", "split-b 3.1-2"}},
		{"pkgver()", vcs, 2, []string{"vcs-git 1.r1-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := serveFile(t, tc.pkgbuild)
			b := newBuilder(t, e, netOpt(upstream))
			j := poll.Job{TargetID: 60, Kind: "url", URL: url, Repo: newRepo(), BaseImage: e.base}
			r, log := runJob(t, b, j)
			wantStatus(t, r, log, poll.ResultSuccess, 0)
			if n := strings.Count(log, "==> Making package: "); n != tc.passes {
				t.Errorf("%d makepkg runs, want %d:\n%s", n, tc.passes, log)
			}
			if nobuild := strings.Contains(log, "+ makepkg --nobuild"); nobuild != (tc.passes == 2) {
				t.Errorf("makepkg --nobuild ran: %v, want %v", nobuild, tc.passes == 2)
			}
			if got := held(e, j.Repo); !slices.Equal(got, tc.held) {
				t.Errorf("published %q, want %q", got, tc.held)
			}
			// The same version again: skipped, decided before makepkg
			// when there is no pkgver().
			r, log = runJob(t, b, j)
			wantStatus(t, r, log, poll.ResultSkipped, 0)
			if n, want := strings.Count(log, "==> Making package: "), tc.passes-1; n != want {
				t.Errorf("skipped build: %d makepkg runs, want %d:\n%s", n, want, log)
			}
			if tc.passes == 2 {
				// A new commit: pkgver() gives a new version, built.
				g.Commit(t, "upstream", "", map[string]string{"README": "2\n"})
				r, log = runJob(t, b, j)
				wantStatus(t, r, log, poll.ResultSuccess, 0)
				if got := held(e, j.Repo); !slices.Contains(got, "vcs-git 1.r2-1") {
					t.Errorf("after a new commit the repository has %q, want vcs-git 1.r2-1", got)
				}
				return
			}
			// The flow of earlier versions, two makepkg runs: the same
			// packages.
			j2 := j
			j2.Repo = newRepo()
			r, log = runJob(t, newBuilder(t, e, netOpt(upstream), job.WithTwoPasses()), j2)
			wantStatus(t, r, log, poll.ResultSuccess, 0)
			if n := strings.Count(log, "==> Making package: "); n != 2 {
				t.Errorf("forced two passes: %d makepkg runs:\n%s", n, log)
			}
			if got := held(e, j2.Repo); !slices.Equal(got, tc.held) {
				t.Errorf("two passes published %q, want %q", got, tc.held)
			}
		})
	}
}

// held lists the "name version" of the packages in a repository.
func held(e *env, repo string) []string {
	var out []string
	for _, p := range e.srv.Packages(repo, "x86_64") {
		out = append(out, fmt.Sprintf("%s %s", p.Info.Name, p.Info.Version))
	}
	slices.Sort(out)
	return out
}
