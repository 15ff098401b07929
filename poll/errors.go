package poll

import (
	"errors"

	"github.com/vieter-v/vagent/vieter"
)

var (
	// ErrUnauthorized means the server rejected the API key (401 or 403).
	// It is vieter.ErrUnauthorized.
	ErrUnauthorized = vieter.ErrUnauthorized
	// ErrSetup may be wrapped by an Executor's error when the build could
	// not be set up (for example the builder image could not be prepared).
	ErrSetup = errors.New("build setup failed")
	// ErrJobTimeout is the cancel cause of a build that ran out of time.
	ErrJobTimeout = errors.New("build timed out")
	// ErrShutdown is the cancel cause of a build stopped by a shutdown.
	ErrShutdown = errors.New("agent shutting down")
	// ErrLocked means another agent uses the data directory.
	ErrLocked = errors.New("data directory is in use by another agent")
	// ErrAlreadyRunning is returned by a second call of Agent.Run.
	ErrAlreadyRunning = errors.New("agent already running")
)
