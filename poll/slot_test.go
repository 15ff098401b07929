package poll

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSlotTransitions(t *testing.T) {
	var s slot
	steps := []struct {
		op   string
		f    func() bool
		ok   bool
		want slotState
	}{
		{"finish empty", s.finish, false, slotEmpty},
		{"collect empty", s.collect, false, slotEmpty},
		{"start", s.start, true, slotRunning},
		{"start running", s.start, false, slotRunning},
		{"collect running", s.collect, false, slotRunning},
		{"finish", s.finish, true, slotDone},
		{"finish done", s.finish, false, slotDone},
		{"start done", s.start, false, slotDone},
		{"collect", s.collect, true, slotEmpty},
	}
	for _, st := range steps {
		if ok := st.f(); ok != st.ok || s.load() != st.want {
			t.Fatalf("%s: ok=%v state=%v, want ok=%v state=%v", st.op, ok, s.load(), st.ok, st.want)
		}
	}
}

// TestSlotConcurrent hammers one slot from many goroutines. Whatever the
// interleaving, successful transitions must form the cycle
// empty→running→done→empty: at the end the counts of successful starts,
// finishes and collects and the final state must agree exactly.
func TestSlotConcurrent(t *testing.T) {
	var s slot
	var starts, finishes, collects atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(200 * time.Millisecond)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for time.Now().Before(deadline) {
				switch r.IntN(3) {
				case 0:
					if s.start() {
						starts.Add(1)
					}
				case 1:
					if s.finish() {
						finishes.Add(1)
					}
				case 2:
					if s.collect() {
						collects.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	st, f, c := starts.Load(), finishes.Load(), collects.Load()
	if st == 0 || c == 0 {
		t.Fatalf("no cycles completed (%d starts, %d collects)", st, c)
	}
	want := map[slotState][3]int64{slotEmpty: {st, st, st}, slotRunning: {st, st - 1, st - 1}, slotDone: {st, st, st - 1}}[s.load()]
	if [3]int64{st, f, c} != want {
		t.Errorf("state %v with %d starts, %d finishes, %d collects", s.load(), st, f, c)
	}
	t.Logf("%d full cycles", c)
}
