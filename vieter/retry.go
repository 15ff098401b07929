package vieter

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Backoff yields exponentially growing delays with jitter: the n-th delay
// is uniform in [d/2, d] with d = Min·2ⁿ capped at Max. The zero value
// yields zero delays.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	d := b.Min
	for i := 0; i < b.n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if d < b.Max {
		b.n++
	}
	if d <= 1 {
		return max(d, 0)
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Reset starts the delays again from Min.
func (b *Backoff) Reset() { b.n = 0 }

// Sleep waits for d or until ctx is done, returning ctx's error then.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AgentRetry is the agent's one retry policy for requests to the server:
// jittered exponential backoff from 1 s to 5 min between attempts, a
// rejected key (401, 403) tried again after 5 min, as many attempts as the
// context allows. The poll loop, log uploads and requeues use it as it is
// (poll's WithBackoff and WithUnauthorizedRetry change its delays); a
// build uses it Finite.
var AgentRetry = Retry{Min: time.Second, Max: 5 * time.Minute, Unauthorized: 5 * time.Minute}

// FastRetry is AgentRetry with millisecond delays, for tests.
var FastRetry = Retry{Min: time.Millisecond, Max: 10 * time.Millisecond, Unauthorized: 10 * time.Millisecond}

// Finite returns r bounded to n attempts, for a caller that must end (a
// build's skip check and publishing): there a rejected key is final,
// since waiting for a new key is the poll loop's business, not a build's.
func (r Retry) Finite(n int) Retry {
	r.Attempts, r.Unauthorized = n, 0
	return r
}

// Retry is how a call is repeated: the shape of AgentRetry, the one retry
// policy of vagent's server requests.
type Retry struct {
	// Attempts bounds the attempts in all; 0 tries until ctx is done.
	Attempts int
	// Min and Max bound the jittered exponential backoff between attempts.
	Min, Max time.Duration
	// Unauthorized is the delay after a 401 or 403; 0 makes them final.
	Unauthorized time.Duration
	// Timeout bounds each attempt; 0 leaves it to ctx.
	Timeout time.Duration
	// OnRetry, if set, is told each failure that will be retried and the
	// delay before the next attempt.
	OnRetry func(err error, delay time.Duration)
}

// Do calls fn until it succeeds, fails for good (not IsTransient), the
// attempts run out or ctx is done, and returns fn's last error. Each
// attempt gets its own context, bounded by Timeout.
func (r Retry) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	bo := Backoff{Min: r.Min, Max: max(r.Max, r.Min)}
	for i := 1; ; i++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if r.Timeout > 0 {
			actx, cancel = context.WithTimeout(ctx, r.Timeout)
		}
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || (r.Attempts > 0 && i >= r.Attempts) {
			return err
		}
		var d time.Duration
		switch {
		case errors.Is(err, ErrUnauthorized) && r.Unauthorized > 0:
			d = r.Unauthorized
		case IsTransient(err):
			d = bo.Next()
		default:
			return err
		}
		if r.OnRetry != nil {
			r.OnRetry(err, d)
		}
		if Sleep(ctx, d) != nil {
			return err
		}
	}
}
