package vieter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	testKey  = "k3y-7f1c9e-do-not-leak"
	testArch = "x86_64"
)

// raw answers like Vieter's framework: the status line, headers, the body
// without a Content-Length (unless length), and the connection closed.
func raw(w http.ResponseWriter, r *http.Request, status int, ctype, body string, length bool) {
	_, _ = io.Copy(io.Discard, r.Body)
	conn, bw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\nConnection: close\r\n", status, http.StatusText(status))
	if ctype != "" {
		fmt.Fprintf(bw, "Content-Type: %s\r\n", ctype)
	}
	if length {
		fmt.Fprintf(bw, "Content-Length: %d\r\n", len(body))
	}
	bw.WriteString("\r\n")
	if r.Method != http.MethodHead {
		bw.WriteString(body)
	}
	_ = bw.Flush()
}

// rawServer serves one kind of answer on every path.
func rawServer(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *Client {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(answer))
	t.Cleanup(ts.Close)
	c, err := NewClient(ts.URL, testKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const desc = "%FILENAME%\nhello-1.0-1-any.pkg.tar.zst\n\n%NAME%\nhello\n\n%VERSION%\n1.0-1\n\n%ARCH%\nany\n"

// route is one call of the client, with the body its success has.
type route struct {
	name    string
	success string
	call    func(ctx context.Context, c *Client) (any, error)
}

var routes = []route{
	{"poll", `{"message":"","data":[{"target_id":3,"kind":"git","url":"u","repo":"r"}]}`, func(ctx context.Context, c *Client) (any, error) {
		j, err := c.Poll(ctx, testArch, 2)
		return len(j), err
	}},
	{"upload log", `{"message":"","data":42}`, func(ctx context.Context, c *Client) (any, error) {
		return c.UploadLog(ctx, LogParams{TargetID: 3, Start: time.Unix(1, 0), End: time.Unix(2, 0), Arch: testArch}, io.NewSectionReader(strings.NewReader("log\n"), 0, 4))
	}},
	{"requeue", ``, func(ctx context.Context, c *Client) (any, error) { return nil, c.Requeue(ctx, 3, testArch, true) }},
	{"publish", `{"message":"","data":{"name":"hello","version":"1.0-1","archs":["x86_64"]}}`, func(ctx context.Context, c *Client) (any, error) {
		p, err := c.Publish(ctx, "bur", strings.NewReader("pkg"), 3)
		if p != nil {
			return p.Name + " " + p.Version, err
		}
		return nil, err
	}},
	{"has version", desc, func(ctx context.Context, c *Client) (any, error) {
		return c.HasVersion(ctx, "bur", testArch, "hello", "1.0-1")
	}},
	{"has file", "db", func(ctx context.Context, c *Client) (any, error) { return c.HasFile(ctx, "bur", testArch, "bur.db") }},
}

// TestClientClassification: every route × every kind of answer Vieter (or
// a cut connection) gives, and how the client classes it.
func TestClientClassification(t *testing.T) {
	type class string
	const (
		okc      class = "ok"
		trans    class = "transient"
		unauth   class = "unauthorized"
		perm     class = "permanent"
		notFound class = "absent" // a version check's 404: ok, false
	)
	type answer struct {
		name   string
		status int
		ctype  string
		body   func(success string) string
		length bool
	}
	answers := []answer{
		{"success", 200, "application/json", func(s string) string { return s }, false},
		{"empty body", 200, "", func(string) string { return "" }, false},
		{"malformed", 200, "application/json", func(string) string { return `{"message": "", "data": [{"target_id": ` }, false},
		{"401 canned", 401, "text/plain", func(string) string { return "401 Unauthorized" }, true},
		{"404 canned", 404, "text/plain", func(string) string { return "404 Not Found" }, true},
		{"404 empty", 404, "", func(string) string { return "" }, false},
		{"411 empty", 411, "", func(string) string { return "" }, false},
		{"400 envelope", 400, "application/json", func(string) string { return `{"message":"Unknown target id.","data":""}` }, false},
		{"500 canned", 500, "text/plain", func(string) string { return "500 Internal Server Error" }, true},
		{"500 empty", 500, "", func(string) string { return "" }, false},
		{"cut mid-body", 200, "application/json", func(s string) string { return s[:len(s)/2] }, false},
	}
	// want[route][answer] = class, and whether the failure is Sent.
	type want struct {
		c    class
		sent bool
	}
	std := map[string]want{"success": {okc, false}, "empty body": {trans, true}, "malformed": {trans, true}, "401 canned": {unauth, false},
		"404 canned": {perm, false}, "404 empty": {perm, false}, "411 empty": {perm, false}, "400 envelope": {perm, false},
		"500 canned": {trans, false}, "500 empty": {trans, false}, "cut mid-body": {trans, true}}
	with := func(over map[string]want) map[string]want {
		m := map[string]want{}
		for k, v := range std {
			m[k] = v
		}
		for k, v := range over {
			m[k] = v
		}
		return m
	}
	wants := map[string]map[string]want{
		"poll":       std,
		"upload log": std,
		"publish":    std,
		// Vieter's success is an empty body: a cut empty body is one too.
		"requeue": with(map[string]want{"empty body": {okc, false}, "cut mid-body": {okc, false}}),
		// A 404 is the answer "not there"; a 200 must be the desc.
		"has version": with(map[string]want{"404 canned": {notFound, false}, "404 empty": {notFound, false}}),
		// HEAD reads no body: any 200 is "there".
		"has file": with(map[string]want{"empty body": {okc, false}, "malformed": {okc, false}, "cut mid-body": {okc, false},
			"404 canned": {notFound, false}, "404 empty": {notFound, false}}),
	}
	for _, rt := range routes {
		for _, an := range answers {
			t.Run(rt.name+"/"+an.name, func(t *testing.T) {
				c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
					if r.Header.Get(keyHeader) != "" && (rt.name == "has version" || rt.name == "has file") {
						t.Errorf("the key was sent with a repository read")
					}
					raw(w, r, an.status, an.ctype, an.body(rt.success), an.length)
				})
				v, err := rt.call(t.Context(), c)
				w := wants[rt.name][an.name]
				var got class
				switch {
				case err == nil && (v == false):
					got = notFound
				case err == nil:
					got = okc
				case errors.Is(err, ErrUnauthorized):
					got = unauth
				case IsTransient(err):
					got = trans
				default:
					got = perm
				}
				if got != w.c || (err != nil && Sent(err) != w.sent) {
					t.Errorf("%v (value %v): class %s sent %v, want %s sent %v", err, v, got, Sent(err), w.c, w.sent)
				}
				if err != nil && strings.Contains(err.Error(), testKey) {
					t.Errorf("key in %q", err)
				}
				var ve *Error
				if an.status >= 400 && !errors.As(err, &ve) && got != notFound {
					t.Errorf("%v is not an *Error", err)
				}
				if an.name == "400 envelope" && rt.name != "has file" && !strings.Contains(err.Error(), "Unknown target id.") {
					t.Errorf("%v: want Vieter's message", err)
				}
				if an.name == "500 canned" && !strings.Contains(err.Error(), "500 Internal Server Error") {
					t.Errorf("%v: want the body's text", err)
				}
			})
		}
	}
}

func TestClientNetworkErrors(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	}))
	c, _ := NewClient(ts.URL, testKey)
	_, err := c.Poll(t.Context(), testArch, 1)
	if !IsTransient(err) || !Sent(err) || strings.Contains(err.Error(), testKey) {
		t.Errorf("dropped connection: %v, transient=%v sent=%v", err, IsTransient(err), Sent(err))
	}
	ts.Close()
	if _, err := c.Poll(t.Context(), testArch, 1); !IsTransient(err) || Sent(err) {
		t.Errorf("refused connection: %v: transient=%v sent=%v, want transient and not sent", err, IsTransient(err), Sent(err))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Poll(ctx, testArch, 1); IsTransient(err) {
		t.Errorf("cancelled ctx: %v must not be transient", err)
	}
	for _, addr := range []string{"", "ftp://x", "http://user:pw@host", "localhost:80", "http://x/?q=1", "http://x/#f", "http://x y"} {
		if _, err := NewClient(addr, testKey); err == nil {
			t.Errorf("NewClient(%q) accepted", addr)
		}
	}
	for _, key := range []string{"", "a\nb"} {
		if _, err := NewClient("http://x", key); err == nil {
			t.Errorf("key %q accepted", key)
		}
	}
}

func TestClientRequests(t *testing.T) {
	type seen struct {
		method, path, query, key string
		length                   int64
		chunked                  bool
		body                     string
	}
	var got []seen
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Api-Key"), r.ContentLength,
			slices.Contains(r.TransferEncoding, "chunked"), string(b)})
		switch r.URL.Path {
		case "/sub/api/v1/logs":
			raw(w, r, 200, "application/json", `{"message":"","data":42}`, false)
		case "/sub/api/v1/jobs/poll":
			raw(w, r, 200, "application/json", `{"message":"","data":[{"target_id":3,"kind":"url","url":"u","branch":"b","path":"p","repo":"r","base_image":"i","force":true,"timeout":5}]}`, false)
		default:
			raw(w, r, 200, "", "", false)
		}
	}))
	defer ts.Close()
	c, err := NewClient(ts.URL+"/sub/", testKey)
	if err != nil {
		t.Fatal(err)
	}
	if c.Address() != ts.URL+"/sub" {
		t.Errorf("Address() = %q", c.Address())
	}
	jobs, err := c.Poll(t.Context(), "aarch64", 2)
	want := Job{TargetID: 3, Kind: "url", URL: "u", Branch: "b", Path: "p", Repo: "r", BaseImage: "i", Force: true, Timeout: 5}
	if err != nil || len(jobs) != 1 || jobs[0] != want {
		t.Fatalf("Poll = %+v, %v", jobs, err)
	}
	for _, content := range []string{"log line\n", ""} {
		// The log is a section of a larger file, as in the spool.
		r := strings.NewReader("header" + content + "trailer")
		id, err := c.UploadLog(t.Context(), LogParams{TargetID: 3, Start: time.Unix(100, 0), End: time.Unix(160, 0), Arch: "aarch64", ExitCode: 2},
			io.NewSectionReader(r, 6, int64(len(content))))
		if err != nil || id != 42 {
			t.Fatalf("UploadLog = %d, %v", id, err)
		}
	}
	if err := c.Requeue(t.Context(), 3, "aarch64", true); err != nil {
		t.Fatal(err)
	}
	if err := c.Requeue(t.Context(), 4, "aarch64", false); err != nil {
		t.Fatal(err)
	}
	wantSeen := []seen{
		{"GET", "/sub/api/v1/jobs/poll", "arch=aarch64&max=2", testKey, 0, false, ""},
		{"POST", "/sub/api/v1/logs", "arch=aarch64&endTime=160&exitCode=2&startTime=100&target=3", testKey, 9, false, "log line\n"},
		{"POST", "/sub/api/v1/logs", "arch=aarch64&endTime=160&exitCode=2&startTime=100&target=3", testKey, 0, false, ""},
		// Vieter takes force as set when the parameter is present at all.
		{"POST", "/sub/api/v1/jobs/queue", "arch=aarch64&target=3&force", testKey, 0, false, ""},
		{"POST", "/sub/api/v1/jobs/queue", "arch=aarch64&target=4", testKey, 0, false, ""},
	}
	if !slices.Equal(got, wantSeen) {
		t.Errorf("requests:\n got %+v\nwant %+v", got, wantSeen)
	}
}

// TestRedirectKeepsKeyAtServer: a request with the API key is not
// followed to another host or from https to plain http; the key never
// arrives there. Reads without the key may follow redirects.
func TestRedirectKeepsKeyAtServer(t *testing.T) {
	var elsewhere []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere = append(elsewhere, r.URL.Path+" key="+r.Header.Get(keyHeader))
		raw(w, r, 200, "application/json", `{"message":"","data":[]}`, false)
	}))
	defer other.Close()
	var target string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/same/"):
			http.Redirect(w, r, "/api/v1/jobs/poll?"+r.URL.RawQuery, http.StatusTemporaryRedirect)
		case r.URL.Path == "/api/v1/jobs/poll" && r.URL.Query().Get("max") == "1":
			raw(w, r, 200, "application/json", `{"message":"","data":[]}`, false)
		default:
			http.Redirect(w, r, target+r.URL.Path+"?"+r.URL.RawQuery, http.StatusTemporaryRedirect)
		}
	}))
	defer srv.Close()
	target = other.URL // another host, and plain http
	c, err := NewClient(srv.URL, testKey, WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Poll(t.Context(), testArch, 2); !errors.Is(err, ErrRedirect) || IsTransient(err) {
		t.Errorf("poll redirected elsewhere: %v, want ErrRedirect, not transient", err)
	}
	// A body that cannot be re-read is not sent again at all.
	if _, err := c.Publish(t.Context(), "bur", strings.NewReader("pkg"), 3); err == nil {
		t.Errorf("publish redirected elsewhere succeeded")
	}
	// A read without the key may go elsewhere (a mirror or CDN).
	if _, err := c.HasFile(t.Context(), "bur", testArch, "bur.db"); err != nil {
		t.Errorf("HEAD without key redirected: %v", err)
	}
	for _, e := range elsewhere {
		if strings.Contains(e, testKey) {
			t.Errorf("the key reached another host: %s", e)
		}
	}
	if len(elsewhere) != 1 {
		t.Errorf("requests elsewhere %v, want only the keyless read", elsewhere)
	}
	// Same host, same scheme: followed with the key.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/same/x?arch=x86_64&max=1", nil)
	req.Header.Set(keyHeader, testKey)
	resp, err := c.hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("same-host redirect: %v", err)
	} else {
		resp.Body.Close()
	}
}

// TestPublishConfirmed: a publish whose answer proves nothing is checked
// in the repository and published again until the server has it.
func TestPublishConfirmed(t *testing.T) {
	stored := false
	publishes, checks := 0, 0
	c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/bur/publish":
			publishes++
			switch publishes {
			case 1: // a proxy page; nothing stored
				raw(w, r, 200, "text/html", "<html>gateway</html>", false)
			case 2: // stored, but the answer is cut
				stored = true
				raw(w, r, 200, "application/json", `{"message":"","da`, false)
			default:
				t.Errorf("published a third time")
				raw(w, r, 500, "", "", false)
			}
		case r.URL.Path == "/bur/x86_64/hello-1.0-1":
			checks++
			if !stored {
				raw(w, r, 404, "", "", false)
				return
			}
			raw(w, r, 200, "text/plain", desc, true)
		default:
			raw(w, r, 404, "text/plain", "404 Not Found", true)
		}
	})
	pkg := Package{Name: "hello", Version: "1.0-1", Arch: "any", File: strings.NewReader("pkg"), Size: 3}
	conf, err := c.PublishConfirmed(t.Context(), "bur", testArch, pkg, Retry{Attempts: 5, Min: time.Millisecond, Max: time.Millisecond})
	if err != nil || conf.By != ConfirmedByCheck || conf.Attempts != 2 || checks != 2 {
		t.Errorf("PublishConfirmed = %+v, %v after %d checks; want confirmed by check after 2 publishes", conf, err, checks)
	}
	// Never stored: not confirmed, a clear error.
	c2 := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bur/publish" {
			raw(w, r, 200, "application/json", `{"message":"","data":{"name":"other","version":"1-1","archs":[]}}`, false)
			return
		}
		raw(w, r, 404, "", "", false)
	})
	conf, err = c2.PublishConfirmed(t.Context(), "bur", testArch, pkg, Retry{Attempts: 3, Min: time.Millisecond, Max: time.Millisecond})
	if !errors.Is(err, ErrNotConfirmed) || conf.Attempts != 3 || conf.By != "" {
		t.Errorf("never stored: %+v, %v; want ErrNotConfirmed after 3 attempts", conf, err)
	}
	// A refusal is final: no check, no retry.
	n := 0
	c3 := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		n++
		raw(w, r, 400, "application/json", `{"message":"bad","data":""}`, false)
	})
	if _, err := c3.PublishConfirmed(t.Context(), "bur", testArch, pkg, Retry{Attempts: 3, Min: time.Millisecond}); err == nil || n != 1 {
		t.Errorf("400: %v after %d requests, want one request", err, n)
	}
}

func TestParsePackageFileName(t *testing.T) {
	for in, want := range map[string][3]string{
		"hello-1.0-1-any.pkg.tar.zst":       {"hello", "1.0-1", "any"},
		"my-pkg-2:3.1.r4-10-x86_64.pkg.tar": {"my-pkg", "2:3.1.r4-10", "x86_64"},
		"a-b-c-1-1-aarch64.pkg.tar.gz":      {"a-b-c", "1-1", "aarch64"},
	} {
		n, v, a, err := ParsePackageFileName(in)
		if err != nil || [3]string{n, v, a} != want {
			t.Errorf("%s: %q %q %q %v", in, n, v, a, err)
		}
	}
	for _, bad := range []string{"hello.pkg.tar.zst", "1-1-any.pkg.tar", "hello-1.0-1-any.tar.zst", "-1-1-any.pkg.tar"} {
		if _, _, _, err := ParsePackageFileName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	wantCaps := []time.Duration{10, 20, 40, 80, 100, 100}
	for i, c := range wantCaps {
		c *= time.Millisecond
		d := b.Next()
		if d < c/2 || d > c {
			t.Errorf("delay %d = %v, want in [%v, %v]", i, d, c/2, c)
		}
	}
	b.Reset()
	if d := b.Next(); d > 10*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}

// TestRetryPolicies: the agent's policy retries a rejected key after its
// delay and transient errors until the context ends; Finite bounds the
// attempts and makes a rejected key final; a permanent error is final in
// both.
func TestRetryPolicies(t *testing.T) {
	transient := &Error{Code: 503}
	unauthorized := fmt.Errorf("poll: %w", ErrUnauthorized)
	permanent := &Error{Code: 400}
	count := func(r Retry, errs ...error) (int, error) {
		n := 0
		err := r.Do(t.Context(), func(context.Context) error {
			n++
			if n <= len(errs) {
				return errs[n-1]
			}
			return nil
		})
		return n, err
	}
	fast := FastRetry
	if n, err := count(fast, transient, unauthorized, transient); n != 4 || err != nil {
		t.Errorf("FastRetry: %d attempts, %v; want 4, nil", n, err)
	}
	if n, err := count(fast, permanent); n != 1 || err != permanent {
		t.Errorf("FastRetry, permanent: %d attempts, %v", n, err)
	}
	finite := FastRetry.Finite(3)
	if n, err := count(finite, transient, transient, transient, transient); n != 3 || err != transient {
		t.Errorf("Finite(3): %d attempts, %v; want 3", n, err)
	}
	if n, err := count(finite, unauthorized); n != 1 || !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Finite, rejected key: %d attempts, %v; want 1, final", n, err)
	}
	if AgentRetry.Attempts != 0 || AgentRetry.Unauthorized == 0 || AgentRetry.Min <= 0 || AgentRetry.Max < AgentRetry.Min {
		t.Errorf("AgentRetry %+v: want unbounded attempts, a delay for a rejected key, growing delays", AgentRetry)
	}
}

// FuzzClientAnswer feeds arbitrary answers to Poll: no panic, no key in errors.
func FuzzClientAnswer(f *testing.F) {
	f.Add(200, []byte(`{"message":"","data":[{"target_id":1}]}`))
	f.Add(500, []byte("<html>"))
	f.Add(401, []byte{})
	f.Add(200, []byte(`{"data":null}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			status = 200
		}
		hc := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader(string(body) + testKey[:len(body)%len(testKey)])), Header: http.Header{}, Request: r}, nil
		})}
		c, err := NewClient("http://vieter.test", testKey, WithHTTPClient(hc))
		if err != nil {
			t.Fatal(err)
		}
		for _, rt := range routes {
			_, err = rt.call(context.Background(), c)
			if err != nil && strings.Contains(err.Error(), testKey) {
				t.Fatalf("%s: key in error %q", rt.name, err)
			}
		}
	})
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestRedactWholeKey(t *testing.T) {
	c, _ := NewClient("http://x", "k3y")
	for in, want := range map[string]string{
		"you sent k3y":           "you sent [redacted]",
		"k3y":                    "[redacted]",
		"key=k3y&x":              "key=[redacted]&x",
		"pac k3yage, k3y.":       "pac k3yage, [redacted].",
		"a k3y-suffix is no key": "a k3y-suffix is no key",
		"\"k3y\" twice: (k3y)":   "\"[redacted]\" twice: ([redacted])",
	} {
		if got := c.redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}
