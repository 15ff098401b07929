package poll

import (
	"time"

	"github.com/vieter-v/vagent/vieter"
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
// status (vieter.Kind).
func ErrorKind(err error) string { return vieter.Kind(err) }
