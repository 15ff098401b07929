package poll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// API is what the agent needs from a Vieter server. Client implements it.
type API interface {
	// Poll pops up to max jobs for arch.
	Poll(ctx context.Context, arch string, max int) ([]Job, error)
	// UploadLog uploads log as a build log and returns its id. log may be
	// read more than once (one upload per call, from its start).
	UploadLog(ctx context.Context, p LogParams, log *io.SectionReader) (int, error)
	// Requeue hands a job back to the server's queue.
	Requeue(ctx context.Context, targetID int, arch string, force bool) error
}

var _ API = (*Client)(nil)

// LogParams are the query parameters of a log upload.
type LogParams struct {
	TargetID   int
	Start, End time.Time
	Arch       string
	ExitCode   int
}

// Client talks to a Vieter server's agent API. It makes one attempt per
// call; the Agent decides what to retry (see IsTransient).
type Client struct {
	base *url.URL
	key  string
	hc   *http.Client
	ua   string
}

// ClientOption configures a Client.
type ClientOption func(*clientOptions) error

type clientOptions struct {
	hc *http.Client
	ua string
}

// WithHTTPClient sets the HTTP client. Default: a client with a 30 s
// connect timeout and no overall timeout (calls are bounded by their ctx).
func WithHTTPClient(hc *http.Client) ClientOption {
	return func(o *clientOptions) error {
		if hc == nil {
			return errors.New("nil http client")
		}
		o.hc = hc
		return nil
	}
}

// WithUserAgent sets the User-Agent header. Default "vagent".
func WithUserAgent(ua string) ClientOption {
	return func(o *clientOptions) error {
		o.ua = ua
		return nil
	}
}

// NewClient returns a client for the server at address (its public URL)
// that authenticates with apiKey.
func NewClient(address, apiKey string, opts ...ClientOption) (*Client, error) {
	o := clientOptions{ua: "vagent"}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = 2 * time.Minute
		o.hc = &http.Client{Transport: tr}
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
	if apiKey == "" {
		return nil, errors.New("empty api key")
	}
	return &Client{base: u, key: apiKey, hc: o.hc, ua: o.ua}, nil
}

// StatusError is an HTTP answer other than 200.
type StatusError struct {
	Op      string // "poll", "upload log", "requeue"
	Code    int
	Message string // the envelope's message, or a clean excerpt of the body
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s: server answered %d %s", e.Op, e.Code, http.StatusText(e.Code))
	if e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden {
		msg += " (check api_key)"
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unwrap lets errors.Is(err, ErrUnauthorized) match 401 and 403.
func (e *StatusError) Unwrap() error {
	if e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden {
		return ErrUnauthorized
	}
	return nil
}

// IsTransient reports whether retrying err may succeed: network errors,
// timeouts of a single request, malformed answers, 5xx, 408 and 429.
// Cancellation of the caller's context is not transient.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code >= 500 || se.Code == http.StatusTooManyRequests || se.Code == http.StatusRequestTimeout
	}
	if errors.Is(err, ErrBadResponse) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func (c *Client) endpoint(p string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + p
	u.RawQuery = q.Encode()
	return u.String()
}

// do sends req with the key and decodes the envelope's data into out.
func (c *Client) do(req *http.Request, op string, out any) error {
	req.Header.Set("X-Api-Key", c.key)
	req.Header.Set("User-Agent", c.ua)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, c.redactErr(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s: reading answer: %w", op, c.redactErr(err))
	}
	var env struct {
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	jsonErr := json.Unmarshal(body, &env)
	if resp.StatusCode != http.StatusOK {
		msg := env.Message
		if jsonErr != nil {
			msg = excerpt(body)
		}
		return &StatusError{Op: op, Code: resp.StatusCode, Message: c.redact(msg)}
	}
	if jsonErr != nil {
		return fmt.Errorf("%s: %w: %s", op, ErrBadResponse, c.redact(excerpt(body)))
	}
	if out != nil {
		if err := json.Unmarshal(env.Data, out); err != nil {
			return fmt.Errorf("%s: %w: data: %v", op, ErrBadResponse, err)
		}
	}
	return nil
}

// excerpt returns a short printable part of a non-JSON body.
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

// redact removes the API key from text that came from the network.
func (c *Client) redact(s string) string { return strings.ReplaceAll(s, c.key, "[redacted]") }

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func (c *Client) redactErr(err error) error {
	if s := err.Error(); strings.Contains(s, c.key) {
		return &redactedError{msg: c.redact(s), err: err}
	}
	return err
}

// Poll pops up to max jobs for arch from the server's queue.
func (c *Client) Poll(ctx context.Context, arch string, max int) ([]Job, error) {
	q := url.Values{"arch": {arch}, "max": {strconv.Itoa(max)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint("/api/v1/jobs/poll", q), nil)
	if err != nil {
		return nil, err
	}
	var jobs []Job
	if err := c.do(req, "poll", &jobs); err != nil {
		return nil, err
	}
	return jobs, nil
}

// UploadLog uploads log with its exact Content-Length.
func (c *Client) UploadLog(ctx context.Context, p LogParams, log *io.SectionReader) (int, error) {
	q := url.Values{
		"target":    {strconv.Itoa(p.TargetID)},
		"startTime": {strconv.FormatInt(p.Start.Unix(), 10)},
		"endTime":   {strconv.FormatInt(p.End.Unix(), 10)},
		"arch":      {p.Arch},
		"exitCode":  {strconv.Itoa(p.ExitCode)},
	}
	size := log.Size()
	var body io.Reader = io.NewSectionReader(log, 0, size)
	if size == 0 {
		body = http.NoBody // a nil-length body would be sent chunked
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint("/api/v1/logs", q), body)
	if err != nil {
		return 0, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	var id int
	if err := c.do(req, "upload log", &id); err != nil {
		return 0, err
	}
	return id, nil
}

// Requeue hands a job back with POST /api/v1/jobs/queue.
func (c *Client) Requeue(ctx context.Context, targetID int, arch string, force bool) error {
	q := url.Values{"target": {strconv.Itoa(targetID)}, "arch": {arch}}
	if force {
		q.Set("force", "")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint("/api/v1/jobs/queue", q), http.NoBody)
	if err != nil {
		return err
	}
	return c.do(req, "requeue", nil)
}
