package vieter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Client talks to one Vieter server. It makes one attempt per call (see
// Retry) and is safe for concurrent use.
type Client struct {
	base *url.URL
	addr string // base without a trailing slash
	key  string
	hc   *http.Client
	ua   string
}

// Option configures a Client.
type Option func(*clientOptions) error

type clientOptions struct {
	hc *http.Client
	ua string
}

// WithHTTPClient sets the HTTP client (its transport, TLS and timeouts).
// The Client uses a copy whose redirect policy also refuses to send the
// API key anywhere but the server. Default: a client with a 30 s connect
// timeout, a 2 min wait for answer headers and no overall timeout (calls
// are bounded by their ctx).
func WithHTTPClient(hc *http.Client) Option {
	return func(o *clientOptions) error {
		if hc == nil {
			return errors.New("nil http client")
		}
		o.hc = hc
		return nil
	}
}

// WithUserAgent sets the User-Agent header. Default "vagent".
func WithUserAgent(ua string) Option {
	return func(o *clientOptions) error {
		o.ua = ua
		return nil
	}
}

// NewClient returns a client for the server at address (its public
// http(s) URL, without credentials, query or fragment) that authenticates
// with apiKey.
func NewClient(address, apiKey string, opts ...Option) (*Client, error) {
	o := clientOptions{ua: "vagent"}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if strings.ContainsFunc(address, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, fmt.Errorf("server address %q has whitespace or control characters", address)
	}
	u, err := url.Parse(strings.TrimRight(address, "/"))
	if err != nil {
		return nil, fmt.Errorf("server address: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server address %q: want http(s)://host", u.Redacted())
	}
	if u.User != nil {
		return nil, errors.New("server address must not contain credentials")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return nil, fmt.Errorf("server address %q: must not have a query or fragment", address)
	}
	if apiKey == "" || strings.ContainsAny(apiKey, "\r\n") {
		return nil, errors.New("api key is empty or has a line break")
	}
	var hc http.Client
	if o.hc != nil {
		hc = *o.hc
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = 2 * time.Minute
		hc.Transport = tr
	}
	c := &Client{base: u, addr: u.String(), key: apiKey, ua: o.ua, hc: &hc}
	next := hc.CheckRedirect
	c.hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.Header.Get(keyHeader) != "" {
			if req.URL.Host != c.base.Host || (c.base.Scheme == "https" && req.URL.Scheme != "https") {
				return fmt.Errorf("%w to %s: the api key goes to %s only", ErrRedirect, redactURL(req.URL), c.addr)
			}
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return c, nil
}

const keyHeader = "X-Api-Key"

// Address is the server's public URL without a trailing slash, as the
// build's pacman.conf names the server's repositories.
func (c *Client) Address() string { return c.addr }

// RepoURL is the URL of file in the arch-repo repo/arch, each segment
// escaped.
func (c *Client) RepoURL(repo, arch, file string) string {
	return c.endpoint("/"+url.PathEscape(repo)+"/"+url.PathEscape(arch)+"/"+url.PathEscape(file), nil)
}

func (c *Client) endpoint(escapedPath string, q url.Values) string {
	s := c.addr + escapedPath
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}

// maxAnswer bounds the body of an answer the client reads.
const maxAnswer = 16 << 20

// answer is a status and a body read to its end (or to maxAnswer).
type answer struct {
	code int
	body []byte
}

// send makes one request and reads the whole answer. Transport failures
// after the request was written are wrapped so that Sent reports them.
func (c *Client) send(ctx context.Context, op, method, target string, body io.Reader, size int64, auth bool) (*answer, error) {
	wrote := false
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) { wrote = i.Err == nil },
	})
	if body == nil {
		body = http.NoBody
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if size >= 0 && body != http.NoBody {
		req.ContentLength = size
	}
	if size == 0 {
		req.Body, req.GetBody = http.NoBody, nil // a 0-length body is otherwise sent chunked
	}
	req.Header.Set("User-Agent", c.ua)
	if auth {
		req.Header.Set(keyHeader, c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		err = fmt.Errorf("%s: %w", op, c.redactErr(err))
		if wrote && !errors.Is(err, ErrRedirect) {
			err = &sentError{err}
		}
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, &sentError{fmt.Errorf("%s: reading the answer: %w", op, c.redactErr(err))}
	}
	return &answer{code: resp.StatusCode, body: b}, nil
}

// envelope is the JSON shape of Vieter's answers.
type envelope struct {
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// statusError is the Error of a non-2xx answer.
func (c *Client) statusError(op string, a *answer) error {
	msg := excerpt(a.body)
	var env envelope
	if json.Unmarshal(a.body, &env) == nil && env.Message != "" {
		msg = env.Message
	}
	return &Error{Op: op, Code: a.code, Message: c.redact(msg)}
}

// data decodes the data of a 2xx JSON envelope into out; anything else is
// ErrMalformed, marked Sent: the server may have acted.
func (c *Client) data(op string, a *answer, out any) error {
	var env envelope
	if err := json.Unmarshal(a.body, &env); err != nil || env.Data == nil {
		return &sentError{fmt.Errorf("%s: %w: %q", op, ErrMalformed, c.redact(excerpt(a.body)))}
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return &sentError{fmt.Errorf("%s: %w: data: %v", op, ErrMalformed, err)}
	}
	return nil
}

func ok(code int) bool { return code >= 200 && code < 300 }

// Poll pops up to max jobs for arch from the server's queue (GET
// /api/v1/jobs/poll). Popped jobs are gone from the server.
func (c *Client) Poll(ctx context.Context, arch string, max int) ([]Job, error) {
	const op = "poll"
	q := url.Values{"arch": {arch}, "max": {strconv.Itoa(max)}}
	a, err := c.send(ctx, op, http.MethodGet, c.endpoint("/api/v1/jobs/poll", q), nil, -1, true)
	if err != nil {
		return nil, err
	}
	if !ok(a.code) {
		return nil, c.statusError(op, a)
	}
	var jobs []Job
	if err := c.data(op, a, &jobs); err != nil {
		return nil, err
	}
	return jobs, nil
}

// Health asks whether the server is up (GET /health, without the API
// key).
func (c *Client) Health(ctx context.Context) error {
	const op = "health"
	a, err := c.send(ctx, op, http.MethodGet, c.endpoint("/health", nil), nil, -1, false)
	if err != nil {
		return err
	}
	if !ok(a.code) {
		return c.statusError(op, a)
	}
	return nil
}

// CheckKey asks whether the server accepts the API key, changing nothing:
// it lists one build log (GET /api/v1/logs?limit=1), a read any agent's
// key may make. A rejected key is ErrUnauthorized.
func (c *Client) CheckKey(ctx context.Context) error {
	const op = "check api key"
	a, err := c.send(ctx, op, http.MethodGet, c.endpoint("/api/v1/logs", url.Values{"limit": {"1"}}), nil, -1, true)
	if err != nil {
		return err
	}
	if !ok(a.code) {
		return c.statusError(op, a)
	}
	return nil
}

// UploadLog uploads log as a build log with its exact Content-Length
// (POST /api/v1/logs) and returns the log's id. log is read from its
// start at every call.
func (c *Client) UploadLog(ctx context.Context, p LogParams, log *io.SectionReader) (int, error) {
	const op = "upload log"
	q := url.Values{
		"target":    {strconv.Itoa(p.TargetID)},
		"startTime": {strconv.FormatInt(p.Start.Unix(), 10)},
		"endTime":   {strconv.FormatInt(p.End.Unix(), 10)},
		"arch":      {p.Arch},
		"exitCode":  {strconv.Itoa(p.ExitCode)},
	}
	a, err := c.send(ctx, op, http.MethodPost, c.endpoint("/api/v1/logs", q), io.NewSectionReader(log, 0, log.Size()), log.Size(), true)
	if err != nil {
		return 0, err
	}
	if !ok(a.code) {
		return 0, c.statusError(op, a)
	}
	var id int
	if err := c.data(op, a, &id); err != nil {
		return 0, err
	}
	return id, nil
}

// Requeue hands a job back to the server's queue (POST
// /api/v1/jobs/queue). Success is a 2xx with an empty body (Vieter's) or a
// JSON envelope. The call is not idempotent: see Sent.
func (c *Client) Requeue(ctx context.Context, targetID int, arch string, force bool) error {
	const op = "requeue"
	// Vieter takes force as set when the parameter is present at all.
	q := url.Values{"target": {strconv.Itoa(targetID)}, "arch": {arch}}
	target := c.endpoint("/api/v1/jobs/queue", q)
	if force {
		target += "&force"
	}
	a, err := c.send(ctx, op, http.MethodPost, target, nil, 0, true)
	if err != nil {
		return err
	}
	if !ok(a.code) {
		return c.statusError(op, a)
	}
	if len(bytes.TrimSpace(a.body)) == 0 {
		return nil
	}
	var env envelope
	if json.Unmarshal(a.body, &env) != nil {
		return &sentError{fmt.Errorf("%s: %w: %q", op, ErrMalformed, c.redact(excerpt(a.body)))}
	}
	return nil
}

// HasFile reports whether file (e.g. "<repo>.db") is in the arch-repo
// repo/arch, with HEAD and without the API key: 200 is yes, 404 no.
func (c *Client) HasFile(ctx context.Context, repo, arch, file string) (bool, error) {
	const op = "check"
	a, err := c.send(ctx, op, http.MethodHead, c.RepoURL(repo, arch, file), nil, -1, false)
	if err != nil {
		return false, err
	}
	switch {
	case a.code == http.StatusNotFound:
		return false, nil
	case ok(a.code):
		return true, nil
	}
	return false, c.statusError(op, a)
}

// HasVersion reports whether version ([epoch:]pkgver-pkgrel) of package
// name is in the arch-repo repo/arch: the skip check of a non-forced
// build, and the confirmation of a publish. It asks with GET
// /:repo/:arch/<name>-<version> and, because a 200 alone proves nothing
// (a proxy page, a cut connection), requires the answer to be the
// package's desc naming that name and version; any other 200 is
// ErrMalformed. No API key is sent.
func (c *Client) HasVersion(ctx context.Context, repo, arch, name, version string) (bool, error) {
	const op = "check"
	a, err := c.send(ctx, op, http.MethodGet, c.RepoURL(repo, arch, name+"-"+version), nil, -1, false)
	if err != nil {
		return false, err
	}
	switch {
	case a.code == http.StatusNotFound:
		return false, nil
	case !ok(a.code):
		return false, c.statusError(op, a)
	}
	d := parseDesc(a.body)
	if d["NAME"] != name || d["VERSION"] != version {
		return false, &sentError{fmt.Errorf("%s %s-%s: %w: not the package's desc: %q", op, name, version, ErrMalformed, excerpt(a.body))}
	}
	return true, nil
}

// parseDesc reads the first value of each %KEY% section of a pacman desc.
func parseDesc(b []byte) map[string]string {
	out := map[string]string{}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		k := strings.TrimSpace(lines[i])
		if len(k) > 2 && strings.HasPrefix(k, "%") && strings.HasSuffix(k, "%") {
			if _, seen := out[k[1:len(k)-1]]; !seen {
				out[k[1:len(k)-1]] = strings.TrimSpace(lines[i+1])
			}
			i++
		}
	}
	return out
}

// Publish uploads one package file (size bytes of pkg) to repo with POST
// /:repo/publish and returns the server's answer. A 200 whose body is not
// the publish envelope is ErrMalformed: use PublishConfirmed to know
// whether the package arrived.
func (c *Client) Publish(ctx context.Context, repo string, pkg io.ReaderAt, size int64) (*Published, error) {
	const op = "publish"
	a, err := c.send(ctx, op, http.MethodPost, c.endpoint("/"+url.PathEscape(repo)+"/publish", nil), io.NewSectionReader(pkg, 0, size), size, true)
	if err != nil {
		return nil, err
	}
	if !ok(a.code) {
		return nil, c.statusError(op, a)
	}
	var p Published
	if err := c.data(op, a, &p); err != nil {
		return nil, err
	}
	if p.Name == "" || p.Version == "" {
		return nil, &sentError{fmt.Errorf("%s: %w: no package name or version in %q", op, ErrMalformed, excerpt(a.body))}
	}
	return &p, nil
}

// excerpt returns a short printable part of a body.
func excerpt(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	s := strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, string(b))
	return strings.Join(strings.Fields(s), " ")
}

// redact removes the API key from text that came from the network: each
// occurrence that is a whole token (not inside a longer run of letters,
// digits, '-' or '_'), so that a short key does not mangle other words.
func (c *Client) redact(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, c.key)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := i + len(c.key)
		whole := (i == 0 || !tokenByte(s[i-1])) && (j == len(s) || !tokenByte(s[j]))
		b.WriteString(s[:i])
		if whole {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(s[i:j])
		}
		s = s[j:]
	}
}

func tokenByte(c byte) bool {
	return c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func (c *Client) redactErr(err error) error {
	if s := err.Error(); c.redact(s) != s {
		return &redactedError{msg: c.redact(s), err: err}
	}
	return err
}

// redactURL is u without userinfo, query and fragment, for messages.
func redactURL(u *url.URL) string {
	v := *u
	v.User, v.RawQuery, v.Fragment = nil, "", ""
	return v.String()
}
