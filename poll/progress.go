package poll

import (
	"context"
	"os"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

// Phase is what a running job does, as Status shows it.
type Phase string

// The phases of a job. An executor reports them with ReportPhase; a job
// starts in PhaseStarting and its log is uploaded in PhaseUploading.
const (
	PhaseStarting   Phase = "starting"          // the job was taken; nothing reported yet
	PhasePulling    Phase = "pulling"           // fetching the base image
	PhasePreparing  Phase = "preparing builder" // the builder's setup runs
	PhaseBuilding   Phase = "building"          // the build runs in its sandbox
	PhasePublishing Phase = "publishing"        // packages go to the server (or the output directory)
	PhaseUploading  Phase = "uploading log"     // the log goes to the server
	PhaseHandBack   Phase = "handing back"      // the job goes back to the server's queue
)

// Progress hears what a running job reports besides its log: its phase,
// and fields of its log's header that only the executor knows (the
// digests of the base image and of the builder). The agent passes one to
// every job through the context (WithProgress); an executor reports with
// ReportPhase and ReportHeader, which do nothing without one. Its methods
// may be called from any goroutine and must return quickly.
type Progress interface {
	Phase(p Phase)
	// Header sets a field of the log's header; key is one of
	// HeaderKeyPattern's words, value one line (see ReportHeader).
	Header(key, value string)
}

type progressKey struct{}

// WithProgress returns a context whose jobs report to p.
func WithProgress(ctx context.Context, p Progress) context.Context {
	return context.WithValue(ctx, progressKey{}, p)
}

// ProgressFrom returns the Progress of ctx's job, one that ignores
// everything when it has none.
func ProgressFrom(ctx context.Context) Progress {
	if p, ok := ctx.Value(progressKey{}).(Progress); ok {
		return p
	}
	return nopProgress{}
}

type nopProgress struct{}

func (nopProgress) Phase(Phase)            {}
func (nopProgress) Header(key, val string) {}

// ReportPhase tells the job's Progress what the job does now.
func ReportPhase(ctx context.Context, p Phase) { ProgressFrom(ctx).Phase(p) }

// Bounds of the header fields an executor contributes: they are stored in
// the spool entry, whose size is fixed when the job starts.
const (
	MaxHeaderFields     = 6
	MaxHeaderValueBytes = 160
)

// HeaderKeyPattern is what a contributed header key looks like: lower-case
// words, e.g. "builder digest".
var HeaderKeyPattern = regexp.MustCompile(`^[a-z][a-z ]{0,31}$`)

// ReportHeader sets a field of the job's log header, e.g. "builder
// digest": "sha256:…". A key that does not match HeaderKeyPattern is
// ignored; the value is made one line and cut at MaxHeaderValueBytes. At
// most MaxHeaderFields keys are kept; setting a key again replaces its
// value.
func ReportHeader(ctx context.Context, key, value string) {
	if HeaderKeyPattern.MatchString(key) {
		ProgressFrom(ctx).Header(key, cleanHeaderValue(value))
	}
}

// cleanHeaderValue makes v one line of valid UTF-8 of at most
// MaxHeaderValueBytes.
func cleanHeaderValue(v string) string {
	v = OneLine(strings.ToValidUTF8(v, "?"))
	if len(v) > MaxHeaderValueBytes {
		cut := MaxHeaderValueBytes
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut]
	}
	return v
}

// jobProgress is the Progress of a job in an agent's slot: its phase goes
// to the slot's Status, its header fields into its spool entry.
type jobProgress struct {
	info  *slotInfo
	spool *spool
	log   logrus.FieldLogger

	mu   sync.Mutex
	e    *spoolEntry
	f    *os.File
	done bool // the job ended: the entry is the build goroutine's again
}

func (p *jobProgress) Phase(ph Phase) {
	p.info.setPhase(ph)
	p.log.WithField("phase", ph).Debug("build phase")
}

func (p *jobProgress) Header(key, value string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.e.Fields = setField(p.e.Fields, key, value)
	if err := p.spool.write(p.f, p.e); err != nil {
		p.log.WithError(err).Warn("saving the log's header fields")
	}
}

// end stops recording: what the executor reports after its job ended
// (from a goroutine it left behind) is dropped.
func (p *jobProgress) end() {
	p.mu.Lock()
	p.done = true
	p.mu.Unlock()
}
