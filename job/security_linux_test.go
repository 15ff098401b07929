package job_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
)

// findPwned lists the files named pwned* below root.
func findPwned(root string) []string {
	var found []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), "pwned") {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// TestInjection sends hostile values in every string field of a job. Every
// value first goes through validation alone (a table, no container): each
// is refused as an invalid job or passes as data. Only the values that pass
// run as builds, in parallel container subtests; each must fail (or treat
// the value as data), and no "pwned" file may appear in the container (its
// upper directory is searched before it is removed) or on the host. A
// base_image value that passes is a registry reference: it is handed to a
// builder-image source that records it and pulls nothing, so the test
// reaches no public registry.
func TestInjection(t *testing.T) {
	e := setup(t)
	g := testkit.NewGitServer(t)
	url := g.Commit(t, "inj", "", map[string]string{"PKGBUILD": pkgbuild("inj", "1", "1"), "sub/escape": "symlink:/etc"})
	plain := serveFile(t, pkgbuild("injurl", "1", "1"))
	// Values with spaces or line breaks use /pwned; those without, which
	// pass validation where a field allows them and reach the build as
	// data, use /build/pwned, which the builder user could write.
	payloads := []string{
		"x; touch /pwned", "$(touch /pwned)", "`touch /pwned`", "x\ntouch /pwned", "--upload-pack=touch /pwned",
		"x;touch${IFS}/build/pwned", "$(touch${IFS}/build/pwned)", "`touch${IFS}/build/pwned`", "--upload-pack=touch${IFS}/build/pwned",
		"-c core.sshCommand=touch${IFS}/pwned", "../../etc", "..", "-", "ext::sh -c touch% /pwned", "ext::touch${IFS}/build/pwned",
		"sub/escape", "sub/escape/..",
	}
	hostPwned := func() []string {
		found := findPwned(e.dir)
		for _, p := range []string{"/pwned", "/build/pwned", "/root/pwned", "pwned"} {
			if _, err := os.Lstat(p); err == nil {
				found = append(found, p)
			}
		}
		return found
	}
	base := poll.Job{TargetID: 9, Kind: "git", URL: url, Repo: newRepo(), BaseImage: e.base}
	type hostile struct {
		field, payload string
		job            poll.Job
	}
	var accepted []hostile
	refused := 0
	for _, field := range []string{"url", "urlkind", "branch", "path", "repo", "base_image"} {
		for _, p := range payloads {
			j := base
			switch field {
			case "url":
				j.URL = p
			case "urlkind":
				j.Kind, j.URL = "url", plain+p
			case "branch":
				j.Branch = p
			case "path":
				j.Path = p
			case "repo":
				j.Repo = p
			case "base_image":
				j.BaseImage = p
			}
			err := job.ValidateJob(j, false)
			switch {
			case err == nil:
				accepted = append(accepted, hostile{field, p, j})
			case errors.Is(err, job.ErrInvalidJob):
				refused++
			default:
				t.Errorf("%s %q: %v is not ErrInvalidJob", field, p, err)
			}
		}
	}
	t.Logf("%d hostile values refused by validation, %d pass as data and run as builds", refused, len(accepted))
	if len(accepted) == 0 {
		t.Fatal("no hostile value passes validation: the container side is not tested")
	}

	var mu sync.Mutex
	var uppers []string
	hook := job.WithUpperHook(func(dir string) {
		if p := findPwned(dir); len(p) > 0 {
			mu.Lock()
			uppers = append(uppers, p...)
			mu.Unlock()
		}
	})
	b := newBuilder(t, e, hook, netOpt(url))
	var asked []string
	noPull, err := job.New(e.sb, job.ImagesFunc(func(_ context.Context, base string, _ io.Writer) (string, func(), error) {
		mu.Lock()
		asked = append(asked, base)
		mu.Unlock()
		return "", nil, errors.New("hermetic test: no image is pulled")
	}), filepath.Join(t.TempDir(), "build"), job.WithServer(serverClient(t, e.ts.URL)), job.WithArch("x86_64"), hook)
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int32
	t.Run("builds", func(t *testing.T) {
		for _, h := range accepted {
			t.Run(h.field+"="+strconv.Quote(h.payload), func(t *testing.T) {
				t.Parallel()
				if h.field == "base_image" {
					r, log := runJob(t, noPull, h.job)
					if r.Result != poll.ResultSetupError || !strings.Contains(log, "hermetic test") {
						t.Errorf("base_image %q: %s\n%s", h.payload, r.Result, log)
					}
					return
				}
				r, log := runJob(t, b, h.job)
				if r.Result == poll.ResultSuccess && h.field != "urlkind" {
					t.Errorf("%s %q: build succeeded:\n%s", h.field, h.payload, log)
				}
				if strings.Contains(log, "+ git clone") || strings.Contains(log, "+ curl") {
					ran.Add(1)
				}
			})
		}
	})
	if found := hostPwned(); len(found) > 0 {
		t.Errorf("%v on the host", found)
	}
	if len(uppers) > 0 {
		t.Errorf("%v in a container", uppers)
	}
	// A base image value that passed reached the image source verbatim,
	// as one reference.
	for _, h := range accepted {
		if h.field == "base_image" && !slices.Contains(asked, h.payload) {
			t.Errorf("base_image %q never reached the image source as one value (asked: %q)", h.payload, asked)
		}
	}
	if ran.Load() == 0 {
		t.Error("no hostile value reached a build: the container side was not tested")
	}
	t.Logf("%d hostile jobs reached the sandbox", ran.Load())
}

// TestAPIKeyNotRevealed runs a PKGBUILD that prints its whole environment
// and searches every file of the container it can read (as root, through
// sudo), /proc included, for the API key. The key is used to publish the
// package, yet neither the log nor the container holds it.
func TestAPIKeyNotRevealed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	half := len(apiKey) / 2
	// The needle is assembled at run time, so the PKGBUILD itself does
	// not contain the key.
	script := `build() {
	env
	needle="$KEY_A$KEY_B"
	sudo find / -xdev \( -path /proc -o -path /sys \) -prune -o -type f -size -64M -print0 2>/dev/null |
		sudo xargs -0 grep -l -F -e "$needle" 2>/dev/null | sed 's/^/FOUND IN FILE /'
	for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
		sudo grep -q -a -F -e "$needle" "$f" 2>/dev/null && echo "FOUND IN $f"
	done
	echo "search done"
}`
	pb := strings.Replace(pkgbuild("keyless", "1", "1", "KEY_A="+apiKey[:half], "KEY_B="+apiKey[half:]),
		`build() { echo "building $pkgname"; }`, script, 1)
	url := serveFile(t, pb)
	var inUpper []string
	b := newBuilder(t, e, job.WithUpperHook(func(dir string) {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if data, err := os.ReadFile(p); err == nil && strings.Contains(string(data), apiKey) {
					inUpper = append(inUpper, p)
				}
			}
			return nil
		})
	}))
	repo := newRepo()
	r, log := runJob(t, b, poll.Job{TargetID: 10, Kind: "url", URL: url, Repo: repo, BaseImage: e.base})
	wantStatus(t, r, log, poll.ResultSuccess, 0)
	if !strings.Contains(log, "search done") || !strings.Contains(log, "PATH=") {
		t.Fatalf("the search did not run:\n%s", log)
	}
	if strings.Contains(log, "FOUND") || strings.Contains(log, apiKey) {
		t.Errorf("the build saw the API key:\n%s", log)
	}
	if len(inUpper) > 0 {
		t.Errorf("files of the build hold the API key: %v", inUpper)
	}
	if len(e.srv.Packages(repo, "x86_64")) != 1 {
		t.Error("the package was not published with the key")
	}
}
