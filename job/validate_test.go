package job_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
)

func TestValidateJob(t *testing.T) {
	ok := poll.Job{Kind: "git", URL: "https://example.org/pkg.git", Branch: "main", Path: "a/b", Repo: "bur", BaseImage: "archlinux:base-devel", Timeout: 10}
	for _, tc := range []struct {
		name  string
		mod   func(*poll.Job)
		local bool
		valid bool
	}{
		{"ok", func(*poll.Job) {}, false, true},
		{"scp-like", func(j *poll.Job) { j.URL = "git@example.org:pkg.git" }, false, true},
		{"git scheme", func(j *poll.Job) { j.URL = "git://127.0.0.1/pkg" }, false, true},
		{"url kind", func(j *poll.Job) { j.Kind, j.URL, j.Branch = "url", "https://example.org/PKGBUILD", "" }, false, true},
		{"no branch no path", func(j *poll.Job) { j.Branch, j.Path = "", "" }, false, true},
		{"branch with slash", func(j *poll.Job) { j.Branch = "release/1.x" }, false, true},
		{"shell chars in branch are data", func(j *poll.Job) { j.Branch = "x;touch${IFS}/pwned" }, false, true},
		{"unknown kind", func(j *poll.Job) { j.Kind = "dir" }, false, false},
		{"empty url", func(j *poll.Job) { j.URL = "" }, false, false},
		{"option url", func(j *poll.Job) { j.URL = "--upload-pack=touch /pwned" }, false, false},
		{"option url no space", func(j *poll.Job) { j.URL = "--upload-pack=id" }, false, false},
		{"ext transport", func(j *poll.Job) { j.URL = "ext::sh -c touch% /pwned" }, false, false},
		{"ext transport no space", func(j *poll.Job) { j.URL = "ext::id" }, false, false},
		{"fd transport", func(j *poll.Job) { j.URL = "fd::3" }, false, false},
		{"file scheme", func(j *poll.Job) { j.URL = "file:///etc" }, false, false},
		{"newline url", func(j *poll.Job) { j.URL = "https://example.org/a\ntouch /pwned" }, false, false},
		{"space url", func(j *poll.Job) { j.URL = "x; touch /pwned" }, false, false},
		{"dash host", func(j *poll.Job) { j.URL = "ssh://-oProxyCommand=id/x" }, false, false},
		{"url kind ftp", func(j *poll.Job) { j.Kind, j.URL, j.Branch = "url", "ftp://example.org/PKGBUILD", "" }, false, false},
		{"url kind with branch", func(j *poll.Job) { j.Kind, j.URL = "url", "https://example.org/PKGBUILD" }, false, false},
		{"option branch", func(j *poll.Job) { j.Branch = "--upload-pack=touch /pwned" }, false, false},
		{"dotdot branch", func(j *poll.Job) { j.Branch = "../../etc" }, false, false},
		{"newline branch", func(j *poll.Job) { j.Branch = "main\nx" }, false, false},
		{"space branch", func(j *poll.Job) { j.Branch = "x; touch /pwned" }, false, false},
		{"dotdot path", func(j *poll.Job) { j.Path = "../../etc" }, false, false},
		{"inner dotdot path", func(j *poll.Job) { j.Path = "a/../../b" }, false, false},
		{"absolute path", func(j *poll.Job) { j.Path = "/etc" }, false, false},
		{"option path", func(j *poll.Job) { j.Path = "--upload-pack=x" }, false, false},
		{"newline path", func(j *poll.Job) { j.Path = "a\nb" }, false, false},
		{"dotdot repo", func(j *poll.Job) { j.Repo = "../../etc" }, false, false},
		{"slash repo", func(j *poll.Job) { j.Repo = "a/b" }, false, false},
		{"newline repo", func(j *poll.Job) { j.Repo = "bur]\n[x" }, false, false},
		{"empty repo", func(j *poll.Job) { j.Repo = "" }, false, false},
		{"shell repo", func(j *poll.Job) { j.Repo = "x;touch" }, false, false},
		{"local base image from a server", func(j *poll.Job) { j.BaseImage = "oci:/etc" }, false, false},
		{"archive base image from a server", func(j *poll.Job) { j.BaseImage = "docker-archive:/etc/shadow" }, false, false},
		{"local base image locally", func(j *poll.Job) { j.BaseImage = "oci:/srv/img:latest" }, true, true},
		{"option base image", func(j *poll.Job) { j.BaseImage = "--upload-pack=x" }, false, false},
		{"shell base image", func(j *poll.Job) { j.BaseImage = "x; touch /pwned" }, false, false},
		{"negative timeout", func(j *poll.Job) { j.Timeout = -1 }, false, false},
		{"https credentials", func(j *poll.Job) { j.URL = "https://user:pa%40ss@example.org/pkg.git" }, false, true},
		{"https token as user", func(j *poll.Job) { j.URL = "https://ghp_token@example.org/pkg.git" }, false, true},
		{"url kind credentials", func(j *poll.Job) { j.Kind, j.URL, j.Branch = "url", "https://u:p@example.org/PKGBUILD", "" }, false, true},
		{"ssh user", func(j *poll.Job) { j.URL = "ssh://git@example.org/pkg.git" }, false, true},
		{"ssh password", func(j *poll.Job) { j.URL = "ssh://git:secret@example.org/pkg.git" }, false, false},
		{"git scheme user", func(j *poll.Job) { j.URL = "git://user@example.org/pkg" }, false, false},
		{"newline in password", func(j *poll.Job) { j.URL = "https://user:a%0Ab@example.org/pkg.git" }, false, false},
		{"newline in url kind user", func(j *poll.Job) { j.Kind, j.URL, j.Branch = "url", "https://a%0Db:p@example.org/PKGBUILD", "" }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := ok
			tc.mod(&j)
			err := job.ValidateJob(j, tc.local)
			if tc.valid && err != nil {
				t.Errorf("ValidateJob(%+v): %v", j, err)
			}
			if !tc.valid && !errors.Is(err, job.ErrInvalidJob) {
				t.Errorf("ValidateJob(%+v) = %v, want ErrInvalidJob", j, err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("the error shows the URL's password: %v", err)
			}
		})
	}
}
