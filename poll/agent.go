package poll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/vieter"
)

// Agent keeps build slots busy with jobs from a server. Create it with New
// and call Run once.
type Agent struct {
	api   API
	exec  Executor
	opts  options
	slots []*slot
	log   logrus.FieldLogger

	wake      chan struct{} // a build finished
	abort     chan struct{} // Abort was called
	abortOnce sync.Once
	running   atomic.Bool

	builds     sync.WaitGroup // running builds
	deliveries sync.WaitGroup // uploads and requeues in flight
	spool      *spool

	// For Status.
	started  atomic.Int64 // Unix nanoseconds
	stopping atomic.Bool
	pending  atomic.Int64 // finished entries not delivered yet
	polls    pollState
	uploads  uploads // deliveries under way
}

// New returns an agent that polls api and runs jobs with exec.
func New(api API, exec Executor, opts ...Option) (*Agent, error) {
	if api == nil || exec == nil {
		return nil, errors.New("poll: nil api or executor")
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("poll: %w", err)
		}
	}
	if o.arch == "" || o.dataDir == "" {
		return nil, errors.New("poll: arch and data dir are required")
	}
	log := o.log
	if o.origin.Agent != "" {
		log = log.WithField("agent", o.origin.Agent)
	}
	a := &Agent{api: api, exec: exec, opts: o, log: log,
		wake: make(chan struct{}, 1), abort: make(chan struct{})}
	for i := range o.slots {
		a.slots = append(a.slots, &slot{id: i})
	}
	return a, nil
}

// Abort cancels running builds at once instead of waiting for the grace
// period, and stops polling. Their logs are still uploaded and their jobs
// requeued. It is safe to call at any time, more than once.
func (a *Agent) Abort() { a.abortOnce.Do(func() { close(a.abort) }) }

// Run delivers the logs left by a previous run, then polls and builds
// until ctx is done, then shuts down (see the package documentation). It
// returns nil after a clean shutdown.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	if a.opts.lock == nil {
		unlock, err := lockDir(a.opts.dataDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	sp, err := openSpool(a.opts.dataDir, a.opts.arch, a.opts.fsync)
	if err != nil {
		return err
	}
	a.spool = sp
	a.started.Store(time.Now().UnixNano())

	// Reporting outlives ctx: it is cancelled only when the shutdown's
	// delivery window ends. Builds are cancelled by the shutdown, with a cause.
	dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer dcancel()
	bctx, bcancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer bcancel(ErrShutdown)

	a.recoverSpool(dctx)
	go func() {
		select {
		case <-a.abort:
			bcancel(ErrShutdown)
		case <-bctx.Done():
		}
	}()
	a.loop(ctx, bctx, dctx)
	a.shutdown(bcancel, dcancel)
	return nil
}

// recoverSpool delivers what a previous run left behind.
func (a *Agent) recoverSpool(dctx context.Context) {
	entries, err := a.spool.list(false)
	if err != nil {
		a.log.WithError(err).Warn("reading log spool")
	}
	for _, e := range entries {
		if e.State == stateRunning {
			a.markInterrupted(e)
		}
		a.settleInterruptedRequeue(e)
		a.log.WithFields(logrus.Fields{"target": e.Job.TargetID, "repo": e.Job.Repo, "spool": e.ID}).
			Info("delivering a log left by a previous run")
		a.pending.Add(1)
		a.deliveries.Add(1)
		go a.deliver(dctx, e)
	}
}

// markInterrupted finishes the entry of a build that was running when the
// agent died: its log gets a note, and its job will be requeued.
func (a *Agent) markInterrupted(e *spoolEntry) {
	e.End = time.Now().Unix()
	e.ExitCode, e.Result, e.State, e.Requeue = ExitInterrupted, ResultInterrupted, stateFinished, true
	f, err := os.OpenFile(a.spool.logPath(e), os.O_RDWR, 0)
	if err == nil {
		err = func() error {
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			e.End = max(fi.ModTime().Unix(), e.Start)
			end := fi.Size()
			if e.Size >= 0 {
				end = min(end, e.bodyOffset()+e.Size) // keep what is known to be complete
			}
			note := "\nvagent: the agent stopped during this build; the job goes back to the server\n"
			if _, err := f.WriteAt([]byte(note), end); err != nil {
				return err
			}
			e.Size = end - e.bodyOffset() + int64(len(note))
			return a.spool.update(f, e)
		}()
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		a.log.WithError(err).Warn("updating spool entry")
	}
}

// loop polls for jobs and starts builds until ctx is done or Abort.
func (a *Agent) loop(ctx, bctx, dctx context.Context) {
	timer := a.opts.clock.NewTimer(0) // first poll at once
	defer timer.Stop()
	bo := vieter.Backoff{Min: min(a.opts.backoffMin, a.opts.pollInterval), Max: a.opts.pollInterval}
	backingOff := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.abort:
			return
		case <-a.wake:
			a.collect()
			if backingOff {
				continue // the backoff timer decides
			}
		case <-timer.C():
			a.collect()
			backingOff = false
		}
		free := a.countEmpty()
		if free == 0 {
			timer.Stop() // a finishing build wakes the loop
			continue
		}
		jobs, err := a.poll(ctx, free)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := bo.Next()
			if errors.Is(err, ErrUnauthorized) {
				d = a.opts.unauthorizedRetry
				a.log.WithError(err).WithField("retry_in", d).Error("the server rejected the api key: check api_key")
			} else if vieter.Sent(err) {
				// Vieter pops what it answers: jobs in a lost or cut
				// answer are gone from its queue and never reach us.
				a.log.WithError(err).WithField("retry_in", d).Warn("a poll answer was lost or cut: jobs the server handed out in it are lost; their targets run again on their schedule")
			} else {
				a.log.WithError(err).WithField("retry_in", d).Warn("polling for jobs failed")
			}
			backingOff = true
			timer.Reset(d)
			continue
		}
		bo.Reset()
		for _, j := range jobs {
			a.startBuild(bctx, dctx, j)
		}
		timer.Reset(a.opts.pollInterval)
	}
}

// poll asks for up to free jobs. The request is not cut short by a
// shutdown (popped jobs would be lost); jobs that arrive after the
// shutdown began, or more than were asked for, are requeued.
func (a *Agent) poll(ctx context.Context, free int) ([]Job, error) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.requestTimeout)
	defer cancel()
	t := a.opts.clock.Now()
	jobs, err := a.api.Poll(pctx, a.opts.arch, free)
	a.polls.record(t, err)
	a.opts.obs.Polled(len(jobs), err)
	if err != nil {
		return nil, err
	}
	keep := free
	if ctx.Err() != nil {
		keep = 0
	}
	if len(jobs) > keep {
		for _, j := range jobs[keep:] {
			a.log.WithFields(logrus.Fields{"target": j.TargetID, "repo": j.Repo}).Warn("handing back a job the agent cannot run now")
			a.deliveries.Add(1)
			go func() {
				defer a.deliveries.Done()
				a.requeueNow(context.WithoutCancel(ctx), j)
			}()
		}
		jobs = jobs[:keep]
	}
	if len(jobs) > 0 {
		a.log.WithField("jobs", len(jobs)).Debug("received jobs")
	}
	return jobs, nil
}

func (a *Agent) collect() {
	for _, s := range a.slots {
		s.collect()
	}
}

func (a *Agent) countEmpty() int {
	n := 0
	for _, s := range a.slots {
		if s.load() == slotEmpty {
			n++
		}
	}
	return n
}

// startBuild hands j to an empty slot.
func (a *Agent) startBuild(bctx, dctx context.Context, j Job) {
	for _, s := range a.slots {
		if s.start() {
			info := &slotInfo{job: j, since: time.Now()}
			info.setPhase(PhaseStarting)
			s.info.Store(info)
			a.builds.Add(1)
			go a.build(bctx, dctx, s, j)
			return
		}
	}
	// Unreachable: the loop asks for at most the empty slots, and only the
	// loop fills slots. Keep the job anyway.
	a.log.WithField("target", j.TargetID).Error("no free slot for a polled job; requeueing it")
	a.deliveries.Add(1)
	go func() { defer a.deliveries.Done(); a.requeueNow(dctx, j) }()
}

// build runs one job in slot s, spools its log and starts its delivery.
func (a *Agent) build(bctx, dctx context.Context, s *slot, j Job) {
	defer a.builds.Done()
	log := a.log.WithFields(logrus.Fields{"slot": s.id, "target": j.TargetID, "repo": j.Repo})
	defer func() {
		s.info.Store(nil)
		if !s.finish() {
			log.Error("slot was not running") // unreachable: only build finishes a slot
		}
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}()

	start := time.Now()
	origin := a.opts.origin
	e := &spoolEntry{ID: newEntryID(start, j), Job: j, Arch: a.opts.arch, Slot: s.id, Start: start.Unix(), Origin: &origin}
	f, err := a.spool.create(e)
	if err != nil {
		// Without a spool the job cannot be reported: hand it back.
		log.WithError(err).Error("cannot spool the build log; requeueing the job")
		a.deliveries.Add(1)
		go func() { defer a.deliveries.Done(); a.requeueNow(dctx, j) }()
		return
	}
	info := &slotInfo{job: j, since: start, log: e.ID}
	info.setPhase(PhaseStarting)
	s.info.Store(info)
	prog := &jobProgress{info: info, spool: a.spool, e: e, f: f, log: log}
	log.WithFields(logrus.Fields{"base_image": j.BaseImage, "source": RedactURL(j.URL)}).Info("build started")
	rep := RunJob(WithProgress(bctx, prog), a.exec, j, a.opts.defaultTimeout, a.opts.logLimit, f)
	prog.end()
	end := rep.End
	e.Start = rep.Start.Unix()
	e.End = max(end.Unix(), e.Start)
	e.ExitCode, e.Result, e.Requeue = rep.ExitCode, rep.Result, rep.Requeue
	e.State = stateFinished
	if n, err := f.Seek(0, io.SeekCurrent); err == nil {
		e.Size = n - e.bodyOffset()
	}
	a.pending.Add(1)
	a.opts.obs.BuildFinished(e.Result, end.Sub(start))
	fin := log.WithFields(logrus.Fields{"result": e.Result, "exit_code": e.ExitCode, "duration": end.Sub(start).Round(time.Millisecond), "reason": rep.Reason})
	if e.Result == ResultSetupError {
		fin.Warn("build finished: the agent could not set it up")
	} else {
		fin.Info("build finished")
	}
	// The slot is free once the build ran: recording its end (a file sync
	// with fsync) and the delivery go on beside the next build. Until the
	// header says finished, a crash makes the entry an interrupted build.
	a.deliveries.Add(1)
	go func() {
		if err := errors.Join(a.spool.update(f, e), f.Close()); err != nil {
			log.WithError(err).Error("saving spool entry")
		}
		a.deliver(dctx, e)
	}()
}

// deliver requeues the entry's job if needed, uploads its log and removes
// it from the spool. It gives up only when ctx is done (the entry stays
// for the next start) or the server refuses the log for good.
func (a *Agent) deliver(ctx context.Context, e *spoolEntry) {
	defer a.deliveries.Done()
	log := a.log.WithFields(logrus.Fields{"slot": e.Slot, "target": e.Job.TargetID, "repo": e.Job.Repo})
	up := a.uploads.add(e)
	defer a.uploads.remove(e.ID)
	if e.Requeue && !e.Requeued {
		up.setPhase(PhaseHandBack)
		a.handBackEntry(ctx, e, log)
	}
	up.setPhase(PhaseUploading)
	p := vieter.LogParams{TargetID: e.Job.TargetID, Start: time.Unix(e.Start, 0), End: time.Unix(e.End, 0), Arch: e.Arch, ExitCode: e.ExitCode}
	var id int
	err := a.retry(ctx, log, func(ctx context.Context) error {
		f, body, err := a.spool.body(e)
		if err != nil {
			return err
		}
		defer f.Close()
		id, err = a.api.UploadLog(ctx, p, body)
		a.opts.obs.Uploaded(err, err != nil && !vieter.IsTransient(err) && !errors.Is(err, ErrUnauthorized) && ctx.Err() == nil)
		return err
	}, a.opts.uploadTimeout)
	switch {
	case err != nil && ctx.Err() != nil:
		log.Warn("log not uploaded; it stays pending for the next start")
	case err != nil:
		log.WithError(err).Error("the server refused the build log; moved to logs/rejected")
		a.pending.Add(-1)
		if err := a.spool.reject(e); err != nil {
			log.WithError(err).Warn("moving rejected log")
		}
	default:
		log.WithField("log_id", id).Info("build log uploaded")
		a.pending.Add(-1)
		if err := a.spool.remove(e); err != nil {
			log.WithError(err).Warn("removing delivered log")
		}
	}
}

// requeueNow hands a job back that never got a spool entry, with the
// same bound on possibly delivered requests as a spooled job.
func (a *Agent) requeueNow(ctx context.Context, j Job) {
	ctx, cancel := context.WithTimeout(ctx, a.opts.deliverTimeout)
	defer cancel()
	log := a.log.WithFields(logrus.Fields{"target": j.TargetID, "repo": j.Repo})
	sent := 0
	st, err := a.handBack(ctx, j, log, &sent, func() error { return nil })
	if st != handedBack {
		log.WithError(err).WithField("outcome", st).Error("could not hand the job back to the server")
	}
}

// policy is the agent's retry policy (vieter.AgentRetry) with the delays
// of its options, each attempt bounded by timeout.
func (a *Agent) policy(timeout time.Duration) vieter.Retry {
	r := vieter.AgentRetry
	r.Min, r.Max, r.Unauthorized, r.Timeout = a.opts.backoffMin, a.opts.backoffMax, a.opts.unauthorizedRetry, timeout
	return r
}

// retry calls fn with the agent's retry policy until it succeeds, fails
// for good, or ctx is done; a rejected key is logged as such.
func (a *Agent) retry(ctx context.Context, log logrus.FieldLogger, fn func(context.Context) error, timeout time.Duration) error {
	r := a.policy(timeout)
	r.OnRetry = func(err error, d time.Duration) {
		if errors.Is(err, ErrUnauthorized) {
			log.WithError(err).WithField("retry_in", d).Error("the server rejected the api key: check api_key")
			return
		}
		log.WithError(err).WithField("retry_in", d).Debug("request failed; retrying")
	}
	return r.Do(ctx, fn)
}

// shutdown waits for the builds (cancelling them after the grace period or
// on Abort), then for deliveries up to the delivery timeout.
func (a *Agent) shutdown(bcancel context.CancelCauseFunc, dcancel context.CancelFunc) {
	a.stopping.Store(true)
	n := 0
	for _, s := range a.slots {
		if s.load() == slotRunning {
			n++
		}
	}
	a.log.WithFields(logrus.Fields{"running": n, "grace": a.opts.grace}).Info("stopping: no more polling")
	done := make(chan struct{})
	go func() { a.builds.Wait(); close(done) }()
	grace := time.NewTimer(a.opts.grace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		a.log.Warn("grace period over: cancelling running builds")
		bcancel(ErrShutdown)
	case <-a.abort:
		a.log.Warn("cancelling running builds")
		bcancel(ErrShutdown)
	}
	<-done

	ddone := make(chan struct{})
	go func() { a.deliveries.Wait(); close(ddone) }()
	t := time.NewTimer(a.opts.deliverTimeout)
	defer t.Stop()
	select {
	case <-ddone:
	case <-t.C:
		a.log.Warn("delivery timeout: undelivered logs stay in the spool for the next start")
		dcancel()
		<-ddone
	}
	a.log.Info("stopped")
}
