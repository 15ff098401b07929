package vieterserver

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustPackage(t testing.TB, name, version, arch string, c Compression) []byte {
	t.Helper()
	b, err := MakePackage(PkgInfo{Name: name, Version: version, Arch: arch, Desc: "test package " + name,
		URL: "https://example.org", Licenses: []string{"MIT"}, Depends: []string{"glibc", "bash>=5"},
		MakeDepends: []string{"make"}, Provides: []string{name + "-bin"}, Packager: "Test <t@example.org>"},
		map[string]string{"usr/": "", "usr/bin/": "", "usr/bin/" + name: "#!/bin/sh\necho " + name + "\n"}, c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readDB returns the entries of a gzip tar database: path → content.
func readDB(t *testing.T, b []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("database is not gzip: %v", err)
	}
	out := map[string]string{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		c, _ := io.ReadAll(tr)
		out[h.Name] = string(c)
	}
}

// publish posts pkg and returns the status and, for a 200, the archs the
// answer says the package was added to ("" for other answers, which have
// an empty body).
func publish(t *testing.T, ts interface{ Client() *http.Client }, base, repo string, pkg []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/"+repo+"/publish", bytes.NewReader(pkg))
	req.Header.Set("X-Api-Key", testKey)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		if len(body) != 0 {
			t.Errorf("publish answered %d with a body %q; Vieter's is empty", resp.StatusCode, body)
		}
		return resp.StatusCode, ""
	}
	var p Published
	if m := decode(t, body, &p); m != "" || p.Name == "" || p.Version == "" {
		t.Errorf("publish answer %s: want an empty message and the package's name and version", body)
	}
	return resp.StatusCode, strings.Join(p.Archs, ",")
}

func TestPublishAndServe(t *testing.T) {
	s, ts := newServer(t, WithDataDir(t.TempDir()))

	// A repository without packages has no database (the real server's quirk).
	if resp, _ := do(t, ts, "GET", "/bur/x86_64/bur.db", "-", nil); resp.StatusCode != 404 {
		t.Errorf("db of an empty repository: %d, want 404", resp.StatusCode)
	}

	zst := mustPackage(t, "hello", "1.0-1", "x86_64", Zstd)
	if code, msg := publish(t, ts, ts.URL, "bur", zst); code != 200 || msg != "x86_64" {
		t.Fatalf("publish: %d %q", code, msg)
	}
	gz := mustPackage(t, "other-pkg", "2:0.9-3", "x86_64", Gzip)
	if code, msg := publish(t, ts, ts.URL, "bur", gz); code != 200 {
		t.Fatalf("publish gzip: %d %q", code, msg)
	}

	for _, name := range []string{"bur.db", "bur.db.tar.gz", "bur.files", "bur.files.tar.gz"} {
		resp, body := do(t, ts, "GET", "/bur/x86_64/"+name, "-", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", name, resp.StatusCode)
		}
		db := readDB(t, body)
		desc := db["hello-1.0-1/desc"]
		for _, want := range []string{
			"%FILENAME%\nhello-1.0-1-x86_64.pkg.tar.zst\n\n", "%NAME%\nhello\n\n", "%BASE%\nhello\n\n",
			"%VERSION%\n1.0-1\n\n", "%DESC%\ntest package hello\n\n", "%CSIZE%\n" + itoa(len(zst)) + "\n\n",
			"%ARCH%\nx86_64\n\n", "%DEPENDS%\nglibc\nbash>=5\n\n", "%MAKEDEPENDS%\nmake\n\n",
			"%PROVIDES%\nhello-bin\n\n", "%LICENSE%\nMIT\n\n", "%SHA256SUM%\n",
		} {
			if !strings.Contains(desc, want) {
				t.Errorf("%s: desc lacks %q:\n%s", name, want, desc)
			}
		}
		if _, ok := db["other-pkg-2:0.9-3/desc"]; !ok {
			t.Errorf("%s: no entry for other-pkg: %v", name, keys(db))
		}
		files, hasFiles := db["hello-1.0-1/files"]
		if strings.HasPrefix(name, "bur.files") != hasFiles {
			t.Errorf("%s: files entry present = %v", name, hasFiles)
		}
		if hasFiles && files != "%FILES%\nusr/\nusr/bin/\nusr/bin/hello\n\n" {
			t.Errorf("%s: files entry %q", name, files)
		}
	}

	// The package archive itself, GET and HEAD.
	resp, body := do(t, ts, "GET", "/bur/x86_64/hello-1.0-1-x86_64.pkg.tar.zst", "-", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, zst) {
		t.Errorf("package download: %d, %d bytes, want %d", resp.StatusCode, len(body), len(zst))
	}
	// The version check of a non-forced build, with an epoch.
	for file, want := range map[string]int{
		"hello-1.0-1": 200, "hello-1.0-2": 404, "other-pkg-2:0.9-3": 200, "other-pkg-0.9-3": 404, "nope-1-1": 404,
	} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, body := do(t, ts, method, "/bur/x86_64/"+file, "-", nil)
			if resp.StatusCode != want {
				t.Errorf("%s %s: %d, want %d", method, file, resp.StatusCode, want)
			}
			if method == "GET" && want == 200 && !strings.Contains(string(body), "%NAME%\n") {
				t.Errorf("GET %s: %q, want the desc", file, body)
			}
			if method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD %s has a body", file)
			}
		}
	}
	if resp, _ := do(t, ts, "GET", "/bur/aarch64/hello-1.0-1", "-", nil); resp.StatusCode != 404 {
		t.Errorf("other arch: %d, want 404", resp.StatusCode)
	}
	if got := readFile(t, s.RepoDir("bur", "x86_64")+"/hello-1.0-1-x86_64.pkg.tar.zst"); got != string(zst) {
		t.Error("package not mirrored to the data dir")
	}
}

func TestPublishVersions(t *testing.T) {
	s, ts := newServer(t)
	steps := []struct {
		version string
		msg     string
		want    string // version in the repository afterwards
	}{
		{"1.0-1", "x86_64", "1.0-1"},
		{"1.0-1", "", "1.0-1"}, // already there: added to no arch-repo
		{"1.1-1", "x86_64", "1.1-1"},
		{"1.0.9-5", "", "1.1-1"},
		{"1:0.1-1", "x86_64", "1:0.1-1"},
	}
	for _, st := range steps {
		code, msg := publish(t, ts, ts.URL, "bur", mustPackage(t, "pkg", st.version, "x86_64", Zstd))
		if code != 200 || msg != st.msg {
			t.Errorf("publish %s: %d %q, want %q", st.version, code, msg, st.msg)
		}
		p := s.Packages("bur", "x86_64")
		if len(p) != 1 || p[0].Info.Version != st.want {
			t.Fatalf("after %s: %+v, want only %s", st.version, p, st.want)
		}
	}
	_, body := do(t, ts, "GET", "/bur/x86_64/bur.db", "-", nil)
	if d := cmp.Diff([]string{"pkg-1:0.1-1/", "pkg-1:0.1-1/desc"}, keys(readDB(t, body))); d != "" {
		t.Errorf("db after replacements (-want +got):\n%s", d)
	}
}

func TestPublishAny(t *testing.T) {
	s, ts := newServer(t, WithDefaultArch("x86_64"))
	publish(t, ts, ts.URL, "bur", mustPackage(t, "armonly", "1-1", "aarch64", Zstd))
	if code, _ := publish(t, ts, ts.URL, "bur", mustPackage(t, "docs", "1-1", "any", Zstd)); code != 200 {
		t.Fatal(code)
	}
	for _, arch := range []string{"x86_64", "aarch64"} {
		var names []string
		for _, p := range s.Packages("bur", arch) {
			names = append(names, p.Info.Name)
		}
		if !strings.Contains(strings.Join(names, ","), "docs") {
			t.Errorf("arch %s: %v, want the any package", arch, names)
		}
		resp, _ := do(t, ts, "HEAD", "/bur/"+arch+"/docs-1-1", "-", nil)
		if resp.StatusCode != 200 {
			t.Errorf("HEAD docs on %s: %d", arch, resp.StatusCode)
		}
	}
	if p := s.Packages("other", "x86_64"); p != nil {
		t.Errorf("package leaked into another repository: %v", p)
	}
}

func TestPublishRejects(t *testing.T) {
	s, ts := newServer(t)
	xz := append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, make([]byte, 100)...)
	noInfo, _ := MakePackage(PkgInfo{Name: "x", Version: "1-1", Arch: "x86_64"}, nil, Zstd)
	noInfo = stripPkgInfo(t, noInfo)
	bad := func(info PkgInfo) []byte {
		b, err := MakePackage(info, map[string]string{"a": "b"}, Gzip)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		body []byte
		msg  string
	}{
		{"xz", xz, "xz-compressed packages are not supported"},
		{"no pkginfo", noInfo, "no .PKGINFO"},
		{"slash in name", bad(PkgInfo{Name: "../../x", Version: "1-1", Arch: "x86_64"}), "invalid pkgname"},
		{"slash in arch", bad(PkgInfo{Name: "x", Version: "1-1", Arch: "../x"}), "invalid arch"},
		{"bad version", bad(PkgInfo{Name: "x", Version: "1/2-1", Arch: "x86_64"}), "invalid pkgver"},
		{"no pkgrel", bad(PkgInfo{Name: "x", Version: "1", Arch: "x86_64"}), "invalid pkgver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Vieter answers a bare 500; the reason is in its log.
			if code, _ := publish(t, ts, ts.URL, "bur", tt.body); code != 500 {
				t.Errorf("%d, want 500", code)
			}
			if _, err := s.Publish("bur", tt.body); err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Publish: %v, want %q", err, tt.msg)
			}
		})
	}
	if p := s.Packages("bur", "x86_64"); len(p) != 0 {
		t.Errorf("rejected packages stored: %v", p)
	}
	// Without Content-Length.
	req, _ := http.NewRequestWithContext(t.Context(), "POST", ts.URL+"/bur/publish", chunked{bytes.NewReader(mustPackage(t, "a", "1-1", "x86_64", Zstd))})
	req.Header.Set("X-Api-Key", testKey)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLengthRequired {
		t.Errorf("chunked publish: %d, want 411", resp.StatusCode)
	}
}

func TestEmptyRepoDB(t *testing.T) {
	_, ts := newServer(t, WithEmptyRepoDB(true))
	resp, body := do(t, ts, "GET", "/bur/x86_64/bur.db", "-", nil)
	if resp.StatusCode != 200 || len(readDB(t, body)) != 0 {
		t.Errorf("empty db: %d, %d bytes", resp.StatusCode, len(body))
	}
}

func stripPkgInfo(t *testing.T, zst []byte) []byte {
	t.Helper()
	r, closeFn, err := decompress(zst)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	var out bytes.Buffer
	tr, tw := tar.NewReader(r), tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if h.Name == ".PKGINFO" {
			continue
		}
		_ = tw.WriteHeader(h)
		_, _ = io.Copy(tw, tr)
	}
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(out.Bytes())
	_ = zw.Close()
	return gz.Bytes()
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}

func TestVerCmp(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0}, {"1.0", "1.1", -1}, {"1.1", "1.0", 1}, {"1.0a", "1.0", -1},
		{"1.0", "1.0a", 1}, {"1.0alpha", "1.0beta", -1}, {"1.0", "1.0.1", -1}, {"1.0-1", "1.0-2", -1},
		{"1:1.0-1", "2.0-1", 1}, {"0:1.0-1", "1.0-1", 0}, {"1.0-1", "1.0", 0}, {"010", "10", 0},
		{"1.0.a", "1.0.1", -1}, {"1.0..1", "1.0.1", 1}, {"1_0", "1.0", 0}, {"2.0-1", "10.0-1", -1},
		{"1.0rc1", "1.0", -1}, {"1.0+r12", "1.0", 1}, {"a", "1", -1},
	}
	for _, tt := range tests {
		if got := VerCmp(tt.a, tt.b); got != tt.want {
			t.Errorf("VerCmp(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := VerCmp(tt.b, tt.a); got != -tt.want {
			t.Errorf("VerCmp(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
	// Against pacman's own vercmp when it is installed.
	vercmp, err := exec.LookPath("vercmp")
	if err != nil {
		t.Log("vercmp not installed (Debian package pacman-package-manager): compared with the table only")
		return
	}
	more := []string{"1", "1.0", "1.0.0", "1.0a", "1.0-1", "1:0.5", "2:0-1", "1.0rc", "1.0..", "1.0.", ".1", "1a2b", "1.0~rc1", "1.0_1", "001"}
	for _, a := range more {
		for _, b := range more {
			out, err := exec.Command(vercmp, a, b).Output()
			if err != nil {
				t.Fatal(err)
			}
			want := strings.TrimSpace(string(out))
			if got := VerCmp(a, b); itoa(got) != want {
				t.Errorf("VerCmp(%q, %q) = %d, vercmp says %s", a, b, got, want)
			}
		}
	}
}

// TestPublishMetaPackages: the builder's meta-packages are served, with
// a database, from the repository they were published to.
func TestPublishMetaPackages(t *testing.T) {
	s, ts := newServer(t, WithDefaultArch("x86_64"))
	if err := s.PublishMetaPackages("deps", "base-devel", "git"); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/deps/x86_64/deps.db", "/deps/x86_64/base-devel-1-1", "/deps/x86_64/git-1-1"} {
		if resp, _ := do(t, ts, "HEAD", path, "-", nil); resp.StatusCode != 200 {
			t.Errorf("HEAD %s: %d", path, resp.StatusCode)
		}
	}
}
