package vieter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

var (
	// ErrUnauthorized means the server rejected the API key (401 or 403).
	ErrUnauthorized = errors.New("unauthorized: check api_key")
	// ErrMalformed means an answer could not be read: a JSON body that
	// does not parse (Vieter's JSON answers end when the connection
	// closes, so a cut connection looks like this), or a body that is not
	// what the route answers. It is transient.
	ErrMalformed = errors.New("malformed server answer")
	// ErrNotConfirmed means a published package could not be found in the
	// repository afterwards.
	ErrNotConfirmed = errors.New("package not confirmed by the server")
	// ErrRedirect means a request carrying the API key was redirected to
	// another host or to plain http, and the redirect was refused.
	ErrRedirect = errors.New("refused redirect")
)

// Error is a server answer with a status other than the route's success.
type Error struct {
	Op   string // "poll", "upload log", "requeue", "publish", "check"
	Code int
	// Message is Vieter's message when the body is a JSON envelope, or a
	// clean excerpt of the body's first bytes otherwise.
	Message string
}

func (e *Error) Error() string {
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
func (e *Error) Unwrap() error {
	if e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden {
		return ErrUnauthorized
	}
	return nil
}

// IsTransient reports whether retrying err may succeed: network failures,
// a single attempt's timeout, cut or malformed answers, 5xx, 408 and 429.
// A cancelled context, 4xx answers (401 and 403 included: see Retry) and
// refused redirects are not transient.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, ErrRedirect) {
		return false
	}
	var se *Error
	if errors.As(err, &se) {
		return se.Code >= 500 || se.Code == http.StatusTooManyRequests || se.Code == http.StatusRequestTimeout
	}
	if errors.Is(err, ErrMalformed) || errors.Is(err, ErrNotConfirmed) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// Kind classifies err for metrics and status: "unauthorized", "http_4xx",
// "http_5xx", "malformed", "timeout", "network" or "other" ("" for nil).
func Kind(err error) string {
	var se *Error
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	case errors.As(err, &se) && se.Code >= 500:
		return "http_5xx"
	case errors.As(err, &se):
		return "http_4xx"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &ne):
		return "network"
	}
	return "other"
}

// sentError marks a failure that happened after the whole request was
// written: the server may have acted on it.
type sentError struct{ err error }

func (e *sentError) Error() string { return e.err.Error() }
func (e *sentError) Unwrap() error { return e.err }

// Sent reports whether the request behind err was written in full before
// the call failed without a readable answer (a cut connection, a timeout
// waiting for the answer, a malformed answer): the server may have acted
// on it. An Error (the server answered with a status) is not Sent, nor is
// a failure to connect or to write the request.
func Sent(err error) bool {
	var s *sentError
	return errors.As(err, &s)
}
