package poll

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/vieter"
)

// maxRequeueSends bounds the requeue requests of one job that may have
// reached the server's handler. Vieter has no idempotency key: every such
// request queues the job once more, also when its answer is lost.
//
// The policy: a request that never reached the server (no connection, or
// the server answered with a status, which Vieter's queue handler only
// does for success and 400) does not count and is retried with backoff.
// A request that was sent but whose answer was lost (cut connection,
// timeout, malformed answer: vieter.Sent) counts; it is re-sent once, so a
// job is queued at most twice — one extra copy — and then not again. Each
// count is written to the job's spool entry before the request is made, so
// a restart after a crash mid-request never sends it again: an entry with
// a possibly delivered request is taken as handed back.
const maxRequeueSends = 2

// handBack states.
type handBackState string

const (
	handedBack      handBackState = "handed back"          // the server confirmed
	handBackMaybe   handBackState = "possibly handed back" // answers lost; not re-sent
	handBackRefused handBackState = "refused"              // the server said no (e.g. unknown target)
	handBackPending handBackState = "pending"              // ctx ended first; tried again at the next start
)

// errSendsUsed ends handBack's retries once maxRequeueSends requests may
// have reached the server.
var errSendsUsed = errors.New("every requeue request this job may send was sent")

// persistError is a failure to record the count of requests sent.
type persistError struct{ err error }

func (e *persistError) Error() string { return "recording the requeue: " + e.err.Error() }
func (e *persistError) Unwrap() error { return e.err }

// handBack requeues j with the agent's retry policy. sent counts the
// requests that may have reached the server; persist saves it durably and
// is called before every request.
func (a *Agent) handBack(ctx context.Context, j Job, log logrus.FieldLogger, sent *int, persist func() error) (handBackState, error) {
	var last error
	policy := a.policy(a.opts.requestTimeout)
	policy.OnRetry = func(err error, d time.Duration) {
		if errors.Is(err, ErrUnauthorized) {
			log.WithError(err).WithField("retry_in", d).Error("the server rejected the api key: check api_key")
			return
		}
		log.WithError(err).WithFields(logrus.Fields{"retry_in": d, "possibly_delivered": *sent}).Warn("handing the job back failed; retrying")
	}
	err := policy.Do(ctx, func(ctx context.Context) error {
		if *sent >= maxRequeueSends {
			return errSendsUsed
		}
		*sent++
		if err := persist(); err != nil {
			*sent--
			return &persistError{err}
		}
		err := a.api.Requeue(ctx, j.TargetID, a.opts.arch, j.Force)
		if err != nil && !vieter.Sent(err) {
			*sent-- // it never reached the handler
			if perr := persist(); perr != nil {
				log.WithError(perr).Warn("updating spool entry")
			}
		}
		if err != nil {
			last = err
		}
		return err
	})
	var pe *persistError
	switch {
	case err == nil:
		return handedBack, nil
	case errors.Is(err, errSendsUsed):
		return handBackMaybe, last
	case errors.As(err, &pe):
		return handBackPending, err
	case ctx.Err() != nil:
		return handBackPending, err
	}
	return handBackRefused, err
}

// handBackEntry requeues the job of a spooled build, records the outcome
// in the entry and says it at the end of the build's log.
func (a *Agent) handBackEntry(ctx context.Context, e *spoolEntry, log logrus.FieldLogger) {
	persist := func() error { return a.spool.save(e) }
	st, err := a.handBack(ctx, e.Job, log, &e.RequeueSent, persist)
	var note string
	switch st {
	case handBackPending:
		log.WithError(err).Warn("requeue not delivered; it stays pending for the next start")
		return
	case handedBack:
		log.Info("job handed back to the server")
		note = "vagent: the job was handed back to the server"
	case handBackMaybe:
		log.WithError(err).Warn("the answers to handing the job back were lost; not sent again, to avoid duplicate jobs")
		note = fmt.Sprintf("vagent: handing the job back: the server's answer was lost %d times (%v); the job may be queued, and is not sent again", maxRequeueSends, err)
	case handBackRefused:
		log.WithError(err).Error("the server refused to take the job back")
		note = fmt.Sprintf("vagent: the server refused to take the job back: %v", err)
	}
	e.Requeued = true
	if err := a.spool.appendNote(e, note); err != nil {
		log.WithError(err).Warn("updating spool entry")
	}
}

// settleInterruptedRequeue handles, at start, an entry whose requeue may
// have reached the server before the agent stopped: it is not sent again.
func (a *Agent) settleInterruptedRequeue(e *spoolEntry) {
	if !e.Requeue || e.Requeued || e.RequeueSent == 0 {
		return
	}
	e.Requeued = true
	note := "vagent: the agent stopped while handing the job back; the job may be queued, and is not sent again"
	if err := a.spool.appendNote(e, note); err != nil {
		a.log.WithError(err).Warn("updating spool entry")
	}
}

// appendNote adds a line to the end of a finished entry's log and saves
// its header.
func (s *spool) appendNote(e *spoolEntry, note string) error {
	f, err := os.OpenFile(s.logPath(e), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = func() error {
		if e.Size >= 0 {
			b := []byte(OneLine(note) + "\n")
			if _, err := f.WriteAt(b, e.bodyOffset()+e.Size); err != nil {
				return err
			}
			e.Size += int64(len(b))
		}
		return s.update(f, e)
	}()
	return errors.Join(err, f.Close())
}
