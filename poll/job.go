package poll

import (
	"context"
	"io"
	"time"
)

// Job is a build job as the server hands it out. Every string in it comes
// from the server's users and is untrusted data.
type Job struct {
	TargetID  int    `json:"target_id"`
	Kind      string `json:"kind"` // "git" or "url"
	URL       string `json:"url"`
	Branch    string `json:"branch"`
	Path      string `json:"path"`
	Repo      string `json:"repo"`
	BaseImage string `json:"base_image"`
	Force     bool   `json:"force"`
	Timeout   int    `json:"timeout"` // seconds
}

// Result says how a build ended.
type Result string

const (
	ResultSuccess     Result = "success"
	ResultFailure     Result = "failure"
	ResultSkipped     Result = "skipped" // already in the repository
	ResultTimeout     Result = "timeout"
	ResultCancelled   Result = "cancelled"   // stopped by a shutdown; requeued
	ResultSetupError  Result = "setup-error" // e.g. no builder image
	ResultInterrupted Result = "interrupted" // the agent died during the build; requeued
)

// Exit codes reported for builds that did not produce their own.
const (
	ExitSetupError  = 125
	ExitTimeout     = 124
	ExitCancelled   = 130
	ExitInterrupted = 137
)

// Outcome is what an Executor reports about one build.
type Outcome struct {
	ExitCode int
	// Result may be left empty: the agent derives it from ExitCode.
	Result Result
	// Start and End may be left zero: the agent uses its own clock.
	Start, End time.Time
}

// Executor runs one job, writing the combined build output to log. It must
// return soon after ctx is done; context.Cause(ctx) tells why (ErrJobTimeout,
// ErrShutdown). An error means the build could not run (wrap ErrSetup when
// its environment could not be prepared): the job still gets its log, with
// the error and a non-zero exit code.
type Executor interface {
	Execute(ctx context.Context, job Job, log io.Writer) (Outcome, error)
}

// ExecutorFunc adapts a function to Executor.
type ExecutorFunc func(ctx context.Context, job Job, log io.Writer) (Outcome, error)

// Execute calls f.
func (f ExecutorFunc) Execute(ctx context.Context, job Job, log io.Writer) (Outcome, error) {
	return f(ctx, job, log)
}
