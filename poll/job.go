package poll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/vieter-v/vagent/vieter"
)

// Job is a build job as the server hands it out (vieter.Job).
type Job = vieter.Job

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

// Outcome is what an Executor reports about one build: what happened, not
// how to call it — RunJob classifies it.
type Outcome struct {
	ExitCode int
	// Result may be left empty: it is derived from ExitCode. A build that
	// stopped because its context ended is classified by RunJob (timeout
	// or cancelled) whatever the executor says.
	Result Result
	// Start and End may be left zero: the agent uses its own clock.
	Start, End time.Time
	// Detail is a short summary for the footer, e.g. "published a, b" or
	// "builder image"; Err what went wrong, if anything.
	Detail string
	Err    error
}

// Executor runs one job, writing the combined build output to log. It must
// return soon after ctx is done; context.Cause(ctx) tells why (ErrJobTimeout,
// ErrShutdown). An error means the build could not run (wrap ErrSetup when
// its environment could not be prepared): the job still gets its log, with
// the error and a non-zero exit code. The executor writes no summary line:
// RunJob writes the one footer of the log.
type Executor interface {
	Execute(ctx context.Context, job Job, log io.Writer) (Outcome, error)
}

// ExecutorFunc adapts a function to Executor.
type ExecutorFunc func(ctx context.Context, job Job, log io.Writer) (Outcome, error)

// Execute calls f.
func (f ExecutorFunc) Execute(ctx context.Context, job Job, log io.Writer) (Outcome, error) {
	return f(ctx, job, log)
}

// Report is how one job ended, as RunJob classified it.
type Report struct {
	Result   Result
	ExitCode int
	// Start and End bracket the build.
	Start, End time.Time
	// Timeout is the deadline the job ran under.
	Timeout time.Duration
	// Reason is the footer's summary, e.g. "timeout after 3600 s" or
	// "success (published a-1-1-any.pkg.tar.zst)".
	Reason string
	// Err is the executor's error or the Outcome's, if any.
	Err error
	// Requeue is true when the job did not run to its end and must be
	// handed back (a shutdown cancelled it).
	Requeue bool
}

// RunJob runs job with exec under the job's deadline — its timeout, or
// defaultTimeout when it has none — and a cause (ErrJobTimeout), recovers
// a panic, classifies the outcome and writes the log's one footer line
// ("vagent: <reason>; exit code N; took D"). What the executor writes past
// logLimit bytes (> 0; 0 for no limit) is dropped with a line that says
// so; the footer is always written. It is the lifecycle of a job in an
// agent's slot, and of `vagent build`.
func RunJob(ctx context.Context, exec Executor, job Job, defaultTimeout time.Duration, logLimit int64, log io.Writer) Report {
	start := time.Now()
	var capped *capWriter
	if logLimit > 0 {
		capped = &capWriter{w: log, limit: logLimit}
	}
	timeout := defaultTimeout
	if job.Timeout > 0 {
		timeout = time.Duration(job.Timeout) * time.Second
	}
	jctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrJobTimeout)
	w := log
	if capped != nil {
		w = capped
	}
	out, err := execute(jctx, exec, job, w)
	cause := context.Cause(jctx)
	stopped := jctx.Err() != nil
	cancel()

	r := Report{Start: start, End: time.Now(), Timeout: timeout, ExitCode: out.ExitCode, Result: out.Result}
	// The job's time, which the deadline bounds, starts here: an executor
	// reports its own start later (after checks, after the builder was
	// acquired), and a timed-out job would then seem to have taken less
	// than its timeout ("timeout after 1 s; took 999ms").
	if !out.Start.IsZero() && out.Start.Before(r.Start) {
		r.Start = out.Start
	}
	if !out.End.IsZero() {
		r.End = out.End
	}
	r.Err = errors.Join(err, out.Err)
	if !knownResult(r.Result) {
		r.Result = ""
	}
	reason := ""
	switch {
	case stopped && errors.Is(cause, ErrJobTimeout):
		r.Result, r.Err = ResultTimeout, nil
		if r.ExitCode == 0 {
			r.ExitCode = ExitTimeout
		}
		reason = fmt.Sprintf("timeout after %d s", int(timeout.Round(time.Second)/time.Second))
	case stopped:
		r.Result, r.Requeue, r.Err = ResultCancelled, true, nil
		if r.ExitCode == 0 {
			r.ExitCode = ExitCancelled
		}
		if cause == nil || cause == context.Canceled {
			cause = errors.New("cancelled")
		}
		reason = fmt.Sprintf("cancelled (%v)", cause)
		if errors.Is(cause, ErrShutdown) {
			// An agent's shutdown hands the job back (Report.Requeue); a
			// local build's Ctrl-C has no server to hand it to.
			reason += "; the job goes back to the server"
		}
	case err != nil:
		if r.Result == "" || r.Result == ResultSuccess {
			r.Result = ResultSetupError
		}
		if r.ExitCode == 0 {
			r.ExitCode = ExitSetupError
		}
	case r.Result == "":
		r.Result = ResultSuccess
		if r.ExitCode != 0 {
			r.Result = ResultFailure
		}
	}
	if r.Result == ResultSuccess && r.ExitCode != 0 {
		r.Result = ResultFailure
	}
	if reason == "" {
		reason = string(r.Result)
		if r.Result == ResultSetupError && out.Detail != "" {
			reason = out.Detail
		} else if out.Detail != "" {
			reason += " (" + out.Detail + ")"
		}
		if r.Err != nil {
			reason += ": " + r.Err.Error()
		}
	}
	r.Reason = OneLine(reason)
	if capped != nil {
		if n := capped.note(); n != "" {
			fmt.Fprintf(log, "\n%s", n)
		}
	}
	fmt.Fprintf(log, "\nvagent: %s; exit code %d; took %s\n", r.Reason, r.ExitCode, r.End.Sub(r.Start).Round(time.Millisecond))
	return r
}

// execute runs the executor, turning a panic into an error.
func execute(ctx context.Context, exec Executor, j Job, w io.Writer) (out Outcome, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("executor panicked: %v", r)
		}
	}()
	return exec.Execute(ctx, j, w)
}

func knownResult(r Result) bool {
	switch r {
	case "", ResultSuccess, ResultFailure, ResultSkipped, ResultTimeout, ResultCancelled, ResultSetupError, ResultInterrupted:
		return true
	}
	return false
}

// OneLine replaces line breaks and control characters so that a message
// stays one line of a build log.
func OneLine(s string) string {
	b := []rune(s)
	for i, r := range b {
		if r != '\t' && (r < ' ' || r == 0x7f) {
			b[i] = '?'
		}
	}
	return string(b)
}
