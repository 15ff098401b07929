// Package poll is the agent loop of vagent: it keeps a fixed set of build
// slots busy with jobs from a Vieter server, spools every build log to disk
// and delivers it, and hands unfinished jobs back on shutdown.
//
// The package defines the small interfaces it depends on: an Executor runs
// one job (the real one prepares a builder image and runs a sandbox; tests
// use a fake), and an API talks to the server (*vieter.Client, the one
// client of the server). Scheduling can therefore be tested without root.
//
// # A job's lifecycle
//
// poll owns it (RunJob): the deadline (the job's timeout, or the default,
// with the cause ErrJobTimeout), the classification of what the executor
// reports (success, failure, skipped, setup-error, timeout, cancelled), the
// log's one footer line, the requeue and the delivery of the log. The
// executor only runs the build and says what happened.
//
// # Slots
//
// Each slot has an atomic state that moves only along
// empty → running (the loop hands it a job) → done (the build finished) →
// empty (the loop collected it), each step a compare-and-swap. The loop
// never polls for more jobs than it has empty slots.
//
// # Polling
//
// The loop is event-driven: it waits on a timer and on a channel that
// finished builds signal. It polls at once when a build finishes and
// otherwise every poll interval; an idle agent sleeps between polls. Poll
// failures back off exponentially with jitter up to the poll interval; a
// rejected API key (401 or 403) is logged as an error that names api_key,
// and polls, uploads and requeues are then retried every
// WithUnauthorizedRetry (5 minutes), so a key fixed on the server needs no
// restart.
//
// # Logs
//
// A build writes its log to <data_dir>/logs/pending/<id>.log, one file per
// job: a fixed-size plain-text header (two alternating copies of a JSON
// entry with the upload parameters and the delivery state, each with a
// sequence number and a checksum) followed by the log. The id names the
// job's target and force flag, so the job is handed back even if a power
// loss destroys a new header. A log is deleted only after the server
// accepted it; uploads are retried with backoff, and pending logs are
// delivered at the next start, also after a crash. A log the server
// rejects for good (400) is moved to logs/rejected. An entry still marked
// running at start belongs to a build the agent did not see end (it was
// killed): its log is uploaded with ExitInterrupted and its job is handed
// back to the server. Delivery is at least once: a crash between the
// server's acceptance and the removal of the spool entry uploads that log
// again. With fsync (the default) the spool also survives a power loss:
// per job, the directory is synced when the entry is created (one sync
// shared by the entries created together) and the file when the build
// ends.
//
// # The log's header
//
// Every uploaded log starts with a LogHeader: the agent's name and
// version (WithAgentName, WithVersion), the host, the slot, the start, the
// job's target, repository, source and base image, then the fields the
// executor reported with ReportHeader (the digests of the base image and
// of the builder, known only once the builder is ready). The fields are
// kept in the spool entry — bounded (MaxHeaderFields, MaxHeaderValueBytes)
// so that its fixed-size header holds them — and the header is written in
// front of the log when it is uploaded: an interrupted build's log has it
// too.
//
// # Metrics and status
//
// An Observer is told about polls, builds and uploads, and Agent.Status
// returns a snapshot: each slot's job, its phase (ReportPhase: pulling,
// preparing builder, building, publishing) and its log, whether the agent
// polls (not while every slot is busy), and the finished builds whose
// logs are on their way to the server (a slot is free for the next job as
// soon as its build ended). The agent passes each job a Progress through
// the context; ReportPhase and ReportHeader reach it from the executor.
// Pending reads a data directory's spool without an agent; FollowLog
// shows a build's log as it will be uploaded, and follows a running one
// until it ends, also from another process.
//
// # Shutdown
//
// When Run's context is cancelled the agent stops polling, lets running
// builds finish for the grace period, then cancels them (Abort cancels
// them at once). Every log is uploaded and every job that did not finish is
// requeued with POST /api/v1/jobs/queue, keeping its force flag; the log is
// uploaded whatever happens to the requeue, and ends with a line that says
// what did.
//
// # Requeue: at most one extra copy
//
// Vieter has no idempotency key: every requeue request that reaches the
// handler queues the job once more, also when its answer is lost. Its
// success is a 200 with an empty body. The agent therefore counts the
// requests that may have reached the handler — sent in full, answer lost
// (vieter.Sent) — and sends at most two per job: a lost answer is re-sent
// once, so a job is queued at most twice, never N times; after a second
// lost answer the log says the job may be queued and it is not sent again.
// A request that never reached the server (no connection) or was answered
// with a status (Vieter's queue handler answers only 200 or 400) does not
// count and is retried with backoff. The count is saved in the job's spool
// entry before each request, so a restart after a crash mid-request does
// not send it again: such an entry is taken as handed back. The cost of
// this choice is that a job whose only request was cut before the handler
// ran and whose agent then died is not queued again; Vieter schedules the
// target again on its own.
package poll
