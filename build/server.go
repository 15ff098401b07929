package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// statusError is an answer of the server other than the expected one.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("server answered %d", e.code)
	}
	return fmt.Sprintf("server answered %d: %s", e.code, e.msg)
}

func (e *statusError) Unwrap() error {
	if e.code == http.StatusUnauthorized || e.code == http.StatusForbidden {
		return ErrUnauthorized
	}
	return nil
}

// transient reports whether retrying err may succeed.
func transient(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.code >= 500 || se.code == http.StatusTooManyRequests || se.code == http.StatusRequestTimeout
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// retry calls f until it succeeds, fails for good, or the attempts or ctx
// run out, sleeping a jittered exponential backoff in between.
func (b *Builder) retry(ctx context.Context, f func(context.Context) error) error {
	delay := b.opts.backoff
	var err error
	for i := 0; i < b.opts.attempts; i++ {
		if i > 0 {
			d := delay/2 + rand.N(delay/2+1)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return errors.Join(err, context.Cause(ctx))
			case <-t.C:
			}
			delay = min(2*delay, 30*time.Second)
		}
		if err = f(ctx); err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// repoURL is <address>/<repo>/<arch>/<file>, each segment escaped.
func (b *Builder) repoURL(repo, file string) string {
	return b.opts.address + "/" + url.PathEscape(repo) + "/" + url.PathEscape(b.opts.arch) + "/" + url.PathEscape(file)
}

// exists asks the server with HEAD whether a repository file (a database,
// or <pkgname>-<version>) is there. No API key is sent: the repository is
// public.
func (b *Builder) exists(ctx context.Context, repo, file string) (bool, error) {
	var found bool
	err := b.retry(ctx, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, b.repoURL(repo, file), nil)
		if err != nil {
			return err
		}
		resp, err := b.opts.client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			found = true
			return nil
		case http.StatusNotFound:
			found = false
			return nil
		}
		return &statusError{code: resp.StatusCode}
	})
	return found, err
}

// publish uploads one package file to <address>/<repo>/publish with its
// Content-Length and the API key.
func (b *Builder) publish(ctx context.Context, repo string, open func() (*os.File, error)) error {
	return b.retry(ctx, func(ctx context.Context) error {
		f, err := open()
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.opts.address+"/"+url.PathEscape(repo)+"/publish", io.NopCloser(f))
		if err != nil {
			return err
		}
		req.ContentLength = fi.Size()
		req.Header.Set("X-Api-Key", b.opts.apiKey)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := b.opts.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			return nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &statusError{code: resp.StatusCode, msg: envelopeMessage(body)}
	})
}

// envelopeMessage returns the message of a {"message": ...} answer, or a
// clean excerpt of a body that is not one.
func envelopeMessage(body []byte) string {
	s := string(body)
	var env struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &env) == nil && env.Message != "" {
		s = env.Message
	}
	s = strings.Map(func(r rune) rune {
		if isSpaceOrControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
