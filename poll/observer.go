package poll

import (
	"context"
	"errors"
	"net"
	"time"
)

// Observer is told what an agent does, for metrics. Its methods are called
// from several goroutines and must return quickly.
type Observer interface {
	// Polled reports one poll request: the jobs received, or its error.
	Polled(jobs int, err error)
	// BuildFinished reports a finished build and how long it ran.
	BuildFinished(r Result, d time.Duration)
	// Uploaded reports one log upload attempt: nil when the server accepted
	// the log; final is true when the log will not be tried again (the
	// server refused it for good).
	Uploaded(err error, final bool)
}

type nopObserver struct{}

func (nopObserver) Polled(int, error)                   {}
func (nopObserver) BuildFinished(Result, time.Duration) {}
func (nopObserver) Uploaded(error, bool)                {}

// ErrorKind classifies an error of a server request for metrics and
// status: "unauthorized", "http_4xx", "http_5xx", "malformed", "timeout",
// "network" or "other".
func ErrorKind(err error) string {
	var se *StatusError
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
	case errors.Is(err, ErrBadResponse):
		return "malformed"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &ne):
		return "network"
	}
	return "other"
}
