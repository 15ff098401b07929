package sandbox_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vieter-v/vagent/sandbox"
)

// TestUpperReleaseOnce: NewUpper keeps what it is given; the first Release
// calls release and returns its error, every later one (concurrent ones
// included) returns ErrReleased without calling it again.
func TestUpperReleaseOnce(t *testing.T) {
	failed := errors.New("remove failed")
	for _, tc := range []struct {
		name string
		err  error
	}{{"removed", nil}, {"failed", failed}} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			u := sandbox.NewUpper("/upper", 100000, 200000, func() error {
				calls.Add(1)
				return tc.err
			})
			if u.Path != "/upper" || u.UIDBase != 100000 || u.GIDBase != 200000 {
				t.Errorf("upper %s %d:%d", u.Path, u.UIDBase, u.GIDBase)
			}
			errs := make([]error, 8)
			var wg sync.WaitGroup
			for i := range errs {
				wg.Go(func() { errs[i] = u.Release() })
			}
			wg.Wait()
			first, released := 0, 0
			for _, err := range errs {
				switch {
				case errors.Is(err, sandbox.ErrReleased):
					released++
				case errors.Is(err, tc.err):
					first++
				default:
					t.Errorf("Release: %v", err)
				}
			}
			if first != 1 || released != len(errs)-1 || calls.Load() != 1 {
				t.Errorf("%d first results, %d ErrReleased, release called %d times; want 1, %d, 1", first, released, calls.Load(), len(errs)-1)
			}
		})
	}
}

// TestUpperNilRelease: an Upper with nothing to remove releases without
// error, once.
func TestUpperNilRelease(t *testing.T) {
	u := sandbox.NewUpper("/upper", 0, 0, nil)
	if err := u.Release(); err != nil {
		t.Errorf("first Release: %v", err)
	}
	if err := u.Release(); !errors.Is(err, sandbox.ErrReleased) {
		t.Errorf("second Release: %v, want ErrReleased", err)
	}
}
