package testkit

import (
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GitServer serves the git repositories below its root over HTTP (git
// http-backend through CGI) on 127.0.0.1, read-only.
type GitServer struct {
	root string
	url  string
	dumb bool
}

// NewGitServer starts a GitServer for the rest of tb. It skips tb (fails
// it in CI) when git is not installed. Each wrap, if any, wraps the
// handler of git http-backend, the last outermost: authentication, fault
// injection, a gate that holds requests.
func NewGitServer(tb testing.TB, wrap ...func(http.Handler) http.Handler) *GitServer {
	tb.Helper()
	git := RequireTool(tb, "git", "git")
	out, err := exec.Command(git, "--exec-path").Output()
	if err != nil {
		tb.Fatal(err)
	}
	g := &GitServer{root: tb.TempDir()}
	var h http.Handler = &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + g.root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	for _, w := range wrap {
		h = w(h)
	}
	ts := httptest.NewServer(h)
	tb.Cleanup(ts.Close)
	g.url = ts.URL
	return g
}

// NewDumbGitServer starts a GitServer that speaks git's dumb HTTP
// protocol: the repositories' files as static files (after git
// update-server-info), as a plain web server or a bucket serves them. Git
// cannot clone shallow from it ("dumb http transport does not support
// shallow capabilities").
func NewDumbGitServer(tb testing.TB) *GitServer {
	tb.Helper()
	RequireTool(tb, "git", "git")
	g := &GitServer{root: tb.TempDir(), dumb: true}
	files := http.FileServer(http.Dir(g.root))
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /NAME/rest is NAME/.git/rest: the work tree is not served.
		name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if strings.Contains(r.URL.RawQuery, "service=") && rest == "info/refs" {
			// A dumb server ignores the smart protocol's query.
			r.URL.RawQuery = ""
		}
		r.URL.Path = "/" + name + "/.git/" + rest
		files.ServeHTTP(w, r)
	}))
	tb.Cleanup(ts.Close)
	g.url = ts.URL
	return g
}

// Commit writes files (path → content) into the repository name on branch
// ("" for the current one; a new branch starts at the current head) and
// commits them. The default branch of a new repository is main. A content
// "symlink:TARGET" makes the path a symbolic link to TARGET. It returns the
// clone URL.
func (g *GitServer) Commit(tb testing.TB, name, branch string, files map[string]string) string {
	tb.Helper()
	dir := filepath.Join(g.root, name)
	git := func(args ...string) {
		tb.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org", "GIT_CONFIG_NOSYSTEM=1", "HOME="+g.root)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		git("init", "-q", "-b", "main")
		git("config", "http.receivepack", "false")
	}
	if branch != "" {
		git("checkout", "-q", "-B", branch)
	}
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			tb.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "symlink:"); ok {
			if err := os.Symlink(target, full); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	git("add", "-A")
	git("commit", "-q", "-m", "test")
	if g.dumb {
		git("update-server-info")
	}
	return g.url + "/" + name
}

// ServeFile serves content at /name on 127.0.0.1 for the rest of tb and
// returns its URL; other paths are 404.
func ServeFile(tb testing.TB, name, content string) string {
	tb.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/"+name {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(content))
	}))
	tb.Cleanup(ts.Close)
	return ts.URL + "/" + name
}
