package poll

import "sync/atomic"

// slotState is the state of a build slot.
type slotState int32

const (
	slotEmpty   slotState = iota // free for a job
	slotRunning                  // a build runs in it
	slotDone                     // the build finished; the loop has not collected it
)

func (s slotState) String() string {
	switch s {
	case slotEmpty:
		return "empty"
	case slotRunning:
		return "running"
	case slotDone:
		return "done"
	}
	return "invalid"
}

// slot is one build slot. Its state changes only through start, finish
// and collect, each a compare-and-swap along empty → running → done →
// empty: no other transition can be expressed.
type slot struct {
	id    int
	state atomic.Int32
	info  atomic.Pointer[slotInfo] // what it builds, for Status
}

// start claims an empty slot for a job (by the loop).
func (s *slot) start() bool {
	return s.state.CompareAndSwap(int32(slotEmpty), int32(slotRunning))
}

// finish marks the running build as finished (by the build).
func (s *slot) finish() bool {
	return s.state.CompareAndSwap(int32(slotRunning), int32(slotDone))
}

// collect frees a finished slot (by the loop).
func (s *slot) collect() bool {
	return s.state.CompareAndSwap(int32(slotDone), int32(slotEmpty))
}

func (s *slot) load() slotState { return slotState(s.state.Load()) }
