package job_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// cmdlineWatch samples every host process's command line whenever a
// request authenticated with the job URL's password arrives: the git or
// curl that sent it is still running then, waiting for the answer.
type cmdlineWatch struct {
	needles []string // the password, raw and as the URL encodes it
	client  string   // host:port of the server, in the client's command line
	check   func()   // more checks while the build runs

	mu         sync.Mutex
	samples    int // authenticated requests sampled
	clientSeen int // samples that found the client's command line
	leaks      []string
}

func (w *cmdlineWatch) sample() {
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	seen := false
	var leaks []string
	for _, p := range pids {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // gone
		}
		for _, n := range w.needles {
			if bytes.Contains(data, []byte(n)) {
				leaks = append(leaks, fmt.Sprintf("%s: %q", p, bytes.ReplaceAll(data, []byte{0}, []byte{' '})))
			}
		}
		seen = seen || bytes.Contains(data, []byte(w.client))
	}
	if w.check != nil {
		w.check()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples++
	if seen {
		w.clientSeen++
	}
	w.leaks = append(w.leaks, leaks...)
}

// basicAuth answers 401 with a Basic challenge, as a private forge does,
// unless the request carries user and password; it samples the command
// lines before serving an authenticated request.
func (w *cmdlineWatch) basicAuth(user, password string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
				rw.Header().Set("WWW-Authenticate", `Basic realm="vagent test"`)
				http.Error(rw, "authentication required", http.StatusUnauthorized)
				return
			}
			w.sample()
			h.ServeHTTP(rw, r)
		})
	}
}

// TestURLCredentialsHidden builds from a git repository and from a
// PKGBUILD URL that both require basic authentication, with the user and
// password in the job's URL. While git and curl talk to the servers, no
// host process's command line holds the password; the clone and the
// download work; neither the log (which shows the build's environment and
// `git remote -v`) nor the build user sees it; the credentials file on the
// host is the mapped root's, 0400, out of other host users' reach.
func TestURLCredentialsHidden(t *testing.T) {
	e := setup(t)
	for _, kind := range []string{"git", "url"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			tok := token(t)
			user, password := "vagent-"+tok[:4], `p"a\s$w:o%rd@`+tok
			withCreds := func(raw string) string {
				u, err := url.Parse(raw)
				if err != nil {
					t.Fatal(err)
				}
				u.User = url.UserPassword(user, password)
				return u.String()
			}
			dir := filepath.Join(sandboxtest.Dir(t), "build")
			w := &cmdlineWatch{needles: []string{tok}}
			var fileChecked bool
			w.check = func() {
				files, _ := filepath.Glob(filepath.Join(dir, "runs", "run-*", "credentials"))
				if len(files) != 1 {
					t.Errorf("credentials files during the build: %v", files)
					return
				}
				fi, err := os.Lstat(files[0])
				if err != nil {
					t.Error(err)
					return
				}
				st := fi.Sys().(*syscall.Stat_t)
				uid, gid, _ := e.sb.IDRange()
				if fi.Mode() != 0o400 || st.Uid != uid || st.Gid != gid {
					t.Errorf("credentials: %v %d:%d, want -r-------- %d:%d", fi.Mode(), st.Uid, st.Gid, uid, gid)
				}
				if reachableByNobody(t, files[0]) {
					t.Errorf("%s is reachable by every host user", files[0])
				}
				fileChecked = true
			}
			script := `	env
	git -C /build/repo remote -v 2>/dev/null || echo "no clone to show"
	if cat /run/vagent/credentials >/dev/null 2>&1; then echo "BUILDER READ THE CREDENTIALS"; fi
	if sudo test -r /run/vagent/credentials; then echo "root reads the credentials"; fi`
			pb := hostileScript("creds"+kind, script)
			var jobURL, shown string
			switch kind {
			case "git":
				g := testkit.NewGitServer(t, w.basicAuth(user, password))
				clone := g.Commit(t, "creds", "", map[string]string{"PKGBUILD": pb})
				jobURL, shown = withCreds(clone), clone
				w.client = strings.TrimPrefix(clone, "http://")
				w.client = w.client[:strings.Index(w.client, "/")]
			case "url":
				ts := httptest.NewServer(w.basicAuth(user, password)(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
					_, _ = rw.Write([]byte(pb))
				})))
				t.Cleanup(ts.Close)
				jobURL, shown = withCreds(ts.URL+"/PKGBUILD"), ts.URL+"/PKGBUILD"
				w.client = strings.TrimPrefix(ts.URL, "http://")
			}
			// The test's server on the loopback: forwarded into the build.
			b, err := job.New(e.sb, e.images, dir, job.WithServer(serverClient(t, e.ts.URL)), job.WithArch("x86_64"), netOpt(shown))
			if err != nil {
				t.Fatal(err)
			}
			repo := newRepo()
			r, log := runJob(t, b, poll.Job{TargetID: 80, Kind: kind, URL: jobURL, Repo: repo, BaseImage: e.base})
			wantStatus(t, r, log, poll.ResultSuccess, 0)
			if len(e.srv.Packages(repo, "x86_64")) != 1 {
				t.Error("the package was not published")
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.samples == 0 || w.clientSeen == 0 {
				t.Fatalf("%d authenticated requests sampled, the client's command line seen in %d: the watch saw nothing", w.samples, w.clientSeen)
			}
			t.Logf("%d authenticated requests sampled, the %s client seen in %d", w.samples, kind, w.clientSeen)
			for _, l := range w.leaks {
				t.Errorf("the password is on a command line: %s", l)
			}
			if strings.Contains(log, tok) {
				t.Errorf("the log holds the password:\n%s", log)
			}
			if strings.Contains(log, "BUILDER READ") || !strings.Contains(log, "root reads the credentials") || !strings.Contains(log, "PATH=") {
				t.Errorf("the builder user read the credentials, or root could not:\n%s", log)
			}
			if !fileChecked {
				t.Error("the credentials file was not checked during the build")
			}
			if kind == "git" && !strings.Contains(log, "origin\t"+shown+" (fetch)") {
				t.Errorf("git remote -v does not show %s:\n%s", shown, log)
			}
		})
	}
}
