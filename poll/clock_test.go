package poll

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when the test says so. A test waits
// for the loop to arm a timer (a state) instead of sleeping.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	armed   []time.Duration // every duration a timer was armed with, in order
	changed chan struct{}   // closed and replaced when a timer changes
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_700_000_000, 0), changed: make(chan struct{})}
}

func (c *fakeClock) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	t.Reset(d)
	return t
}

// Advance moves the clock by d, firing the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		if t.active && !t.when.After(c.now) {
			t.fire()
		}
	}
	c.notify()
}

// waitArmed waits until a timer is armed and returns its duration; the
// n-th call returns the n-th arming (counting from 1).
func (c *fakeClock) waitArmed(t *testing.T, n int) time.Duration {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		c.mu.Lock()
		if len(c.armed) >= n {
			d := c.armed[n-1]
			c.mu.Unlock()
			return d
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timer %d was never armed", n)
		}
	}
}

type fakeTimer struct {
	c      *fakeClock
	ch     chan time.Time
	when   time.Time
	active bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

// fire sends the time; the caller holds the clock's lock.
func (t *fakeTimer) fire() {
	t.active = false
	select {
	case t.ch <- t.c.now:
	default:
	}
}

func (t *fakeTimer) drain() {
	select {
	case <-t.ch:
	default:
	}
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	t.drain()
	t.c.notify()
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.drain()
	t.when, t.active = t.c.now.Add(d), true
	if d > 0 {
		t.c.armed = append(t.c.armed, d)
	}
	if d <= 0 {
		t.fire()
	}
	t.c.notify()
	return was
}
