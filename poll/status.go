package poll

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Status is a snapshot of an agent, as `vagent status` shows it.
type Status struct {
	// Agent and Version name the agent (agent_name) and its program.
	Agent        string        `json:"agent,omitempty"`
	Version      string        `json:"version,omitempty"`
	Arch         string        `json:"arch"`
	Started      time.Time     `json:"started"`
	PollInterval time.Duration `json:"poll_interval"`
	Slots        []SlotStatus  `json:"slots"`
	// PendingLogs counts finished builds whose log the server has not
	// accepted yet.
	PendingLogs int `json:"pending_logs"`
	// LastPoll is the time of the last poll request and LastPollOK of the
	// last one that succeeded; LastPollError is the error of the last one,
	// empty when it succeeded.
	LastPoll      time.Time `json:"last_poll,omitzero"`
	LastPollOK    time.Time `json:"last_poll_ok,omitzero"`
	LastPollError string    `json:"last_poll_error,omitempty"`
	// Stopping is true once the shutdown began.
	Stopping bool `json:"stopping"`
	// Polling is false while the agent does not poll: every slot is busy,
	// or it is stopping.
	Polling bool `json:"polling"`
	// Uploads are the finished builds whose log (and, for a job that did
	// not run to its end, whose hand-back) is on its way to the server.
	Uploads []UploadStatus `json:"uploads,omitempty"`
}

// SlotStatus is one slot of a Status.
type SlotStatus struct {
	Slot  int       `json:"slot"`
	State string    `json:"state"` // empty, running, done
	Job   *Job      `json:"job,omitempty"`
	Since time.Time `json:"since,omitzero"`
	// Phase is what the running job does (PhasePulling, PhaseBuilding…).
	Phase Phase `json:"phase,omitempty"`
	// Log is the id of the job's log in the spool (logs/pending/<id>.log).
	Log string `json:"log,omitempty"`
}

// UploadStatus is a finished build whose delivery is under way: the slot
// it ran in is free for the next job already.
type UploadStatus struct {
	Slot  int       `json:"slot"`
	Job   Job       `json:"job"`
	Since time.Time `json:"since"`
	Phase Phase     `json:"phase"` // PhaseHandBack, then PhaseUploading
	Log   string    `json:"log"`
}

// slotInfo is what a running slot builds.
type slotInfo struct {
	job   Job
	since time.Time
	log   string // spool entry id; "" until the entry exists
	phase atomic.Pointer[Phase]
}

func (i *slotInfo) setPhase(p Phase) { i.phase.Store(&p) }

func (i *slotInfo) getPhase() Phase {
	if p := i.phase.Load(); p != nil {
		return *p
	}
	return ""
}

// uploads are the deliveries under way, for Status.
type uploads struct {
	mu sync.Mutex
	m  map[string]*upload // by spool entry id
}

type upload struct {
	slot  int
	job   Job
	since time.Time
	log   string
	phase atomic.Pointer[Phase]
}

func (u *upload) setPhase(p Phase) { u.phase.Store(&p) }

func (us *uploads) add(e *spoolEntry) *upload {
	u := &upload{slot: e.Slot, job: e.Job, since: time.Now(), log: e.ID}
	u.setPhase(PhaseUploading)
	us.mu.Lock()
	defer us.mu.Unlock()
	if us.m == nil {
		us.m = map[string]*upload{}
	}
	us.m[e.ID] = u
	return u
}

func (us *uploads) remove(id string) {
	us.mu.Lock()
	defer us.mu.Unlock()
	delete(us.m, id)
}

func (us *uploads) list() []UploadStatus {
	us.mu.Lock()
	defer us.mu.Unlock()
	out := make([]UploadStatus, 0, len(us.m))
	for _, u := range us.m {
		j := u.job
		j.URL = RedactURL(j.URL)
		out = append(out, UploadStatus{Slot: u.slot, Job: j, Since: u.since, Phase: *u.phase.Load(), Log: u.log})
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Log < out[k].Log })
	return out
}

// pollState records the outcome of the poll requests.
type pollState struct {
	last, lastOK atomic.Int64 // Unix nanoseconds
	lastErr      atomic.Pointer[string]
}

func (p *pollState) record(t time.Time, err error) {
	p.last.Store(t.UnixNano())
	if err == nil {
		p.lastOK.Store(t.UnixNano())
		p.lastErr.Store(nil)
		return
	}
	s := err.Error()
	p.lastErr.Store(&s)
}

func unixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Status returns a snapshot of the agent. It may be called at any time,
// from any goroutine.
func (a *Agent) Status() Status {
	st := Status{Agent: a.opts.origin.Agent, Version: a.opts.origin.Version, Arch: a.opts.arch,
		PollInterval: a.opts.pollInterval, Started: unixNano(a.started.Load()),
		PendingLogs: int(a.pending.Load()), LastPoll: unixNano(a.polls.last.Load()),
		LastPollOK: unixNano(a.polls.lastOK.Load()), Stopping: a.stopping.Load()}
	if e := a.polls.lastErr.Load(); e != nil {
		st.LastPollError = *e
	}
	for _, s := range a.slots {
		ss := SlotStatus{Slot: s.id, State: s.load().String()}
		if info := s.info.Load(); info != nil && ss.State != slotEmpty.String() {
			j := info.job
			j.URL = RedactURL(j.URL)
			ss.Job, ss.Since, ss.Phase, ss.Log = &j, info.since, info.getPhase(), info.log
		}
		if ss.State == slotEmpty.String() {
			st.Polling = true
		}
		st.Slots = append(st.Slots, ss)
	}
	st.Polling = st.Polling && !st.Stopping && a.running.Load()
	st.Uploads = a.uploads.list()
	return st
}

// RedactURL returns a job's URL without its userinfo (a token in
// https://TOKEN@host/… is a secret of the server's user), for status
// output. A URL that does not parse but holds an '@' is replaced whole.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if strings.Contains(s, "@") {
			return "[redacted URL]"
		}
		return s
	}
	if u.User == nil {
		return s
	}
	u.User = url.User("redacted")
	return u.String()
}

// PendingLog is a log in a data directory's spool.
type PendingLog struct {
	ID    string    `json:"id"`
	Job   Job       `json:"job"`
	Arch  string    `json:"arch"`
	Slot  int       `json:"slot"`
	Start time.Time `json:"start"`
	// Running is true for a build that has not finished: one that runs
	// now if an agent uses the directory, or that was interrupted.
	Running  bool   `json:"running"`
	ExitCode int    `json:"exit_code"`
	Result   Result `json:"result,omitempty"`
	Size     int64  `json:"size"`
}

// Pending lists the logs in the spool of dataDir without changing
// anything, also while an agent uses the directory.
func Pending(dataDir string) ([]PendingLog, error) {
	pending := filepath.Join(dataDir, "logs", "pending")
	if _, err := os.Stat(pending); err != nil {
		return nil, fmt.Errorf("reading spool: %w", err)
	}
	s := &spool{pending: pending, rejected: filepath.Join(dataDir, "logs", "rejected")}
	entries, err := s.list(true)
	var out []PendingLog
	for _, e := range entries {
		j := e.Job
		j.URL = RedactURL(j.URL)
		p := PendingLog{ID: e.ID, Job: j, Arch: e.Arch, Slot: e.Slot, Start: time.Unix(e.Start, 0),
			Running: e.State == stateRunning, ExitCode: e.ExitCode, Result: e.Result, Size: e.Size}
		if fi, err := os.Stat(s.logPath(e)); err == nil && p.Size < 0 {
			p.Size = max(fi.Size()-e.bodyOffset(), 0)
		}
		out = append(out, p)
	}
	return out, err
}
