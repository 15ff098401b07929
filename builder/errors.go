package builder

import (
	"errors"
	"fmt"
)

var (
	// ErrSetup means the setup of a builder failed; the error is a
	// *SetupError carrying the tail of the setup output.
	ErrSetup = errors.New("builder setup failed")
	// ErrClosed is returned by Acquire after Close.
	ErrClosed = errors.New("builder manager closed")
	// ErrBadConfig reports an option value that cannot be written safely
	// into the builder (a repository name, server or package with
	// characters pacman.conf or pacman would misread).
	ErrBadConfig = errors.New("invalid builder configuration")
)

// SetupError is a failed builder setup. errors.Is(err, ErrSetup) holds.
type SetupError struct {
	// Base is the base image reference.
	Base string
	// ExitCode is the setup script's exit status (0 when it did not run
	// to the end for another reason, see Err).
	ExitCode int
	// TimedOut is set when the setup timeout ended it.
	TimedOut bool
	// Log is the tail of the setup output (at most the last 64 KiB).
	Log []byte
	// Err is the underlying error, if any.
	Err error
}

func (e *SetupError) Error() string {
	switch {
	case e.TimedOut:
		return fmt.Sprintf("%s: %s: timed out", ErrSetup, e.Base)
	case e.Err != nil:
		return fmt.Sprintf("%s: %s: %v", ErrSetup, e.Base, e.Err)
	}
	return fmt.Sprintf("%s: %s: exit status %d", ErrSetup, e.Base, e.ExitCode)
}

// Is makes errors.Is(err, ErrSetup) true.
func (e *SetupError) Is(target error) bool { return target == ErrSetup }

// Unwrap returns the underlying error.
func (e *SetupError) Unwrap() error { return e.Err }
