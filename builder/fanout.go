package builder

import (
	"io"
	"sync"
)

// tailSize is how much of the setup output a SetupError keeps.
const tailSize = 64 << 10

// fanout copies the output of one preparation to every caller waiting for
// it (attached while they wait) and keeps its tail for the error. A writer
// that fails is dropped; the preparation never stops because of a reader.
type fanout struct {
	mu    sync.Mutex
	ws    map[int]io.Writer
	next  int
	tail  []byte
	stage Stage // the last one, for writers attached later
}

// Stage is what a preparation does, for callers that show progress.
type Stage string

const (
	StagePulling   Stage = "pulling"   // resolving and fetching the base image
	StagePreparing Stage = "preparing" // the setup, or waiting for another process's
)

// StageWriter is a log writer that also hears of the stages of the
// preparation whose output it receives: Acquire, Refresh and Prepare tell
// a log that implements it (a caller that joins a preparation under way
// hears its current stage first).
type StageWriter interface {
	io.Writer
	Stage(Stage)
}

// Stage tells the attached StageWriters.
func (f *fanout) Stage(s Stage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stage = s
	for _, w := range f.ws {
		if sw, ok := w.(StageWriter); ok {
			sw.Stage(s)
		}
	}
}

// setStage tells out's StageWriters, if it has any, of s.
func setStage(out io.Writer, s Stage) {
	if sw, ok := out.(StageWriter); ok {
		sw.Stage(s)
	}
}

func newFanout() *fanout { return &fanout{ws: map[int]io.Writer{}} }

func (f *fanout) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tail = append(f.tail, p...)
	if over := len(f.tail) - tailSize; over > 0 {
		f.tail = append(f.tail[:0], f.tail[over:]...)
	}
	for id, w := range f.ws {
		if _, err := w.Write(p); err != nil {
			delete(f.ws, id)
		}
	}
	return len(p), nil
}

// attach adds w, first replaying the output so far (its tail), and
// returns the function that removes it again.
func (f *fanout) attach(w io.Writer) (detach func()) {
	if w == nil {
		return func() {}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if sw, ok := w.(StageWriter); ok && f.stage != "" {
		sw.Stage(f.stage)
	}
	if len(f.tail) > 0 {
		if _, err := w.Write(f.tail); err != nil {
			return func() {}
		}
	}
	id := f.next
	f.next++
	f.ws[id] = w
	return func() {
		f.mu.Lock()
		delete(f.ws, id)
		f.mu.Unlock()
	}
}

// tailBytes returns a copy of the tail.
func (f *fanout) tailBytes() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.tail...)
}
