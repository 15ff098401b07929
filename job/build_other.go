//go:build !linux

package job

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/vieter-v/vagent/poll"
)

func (b *Runner) run(ctx context.Context, job poll.Job, srcDir string, log io.Writer) *Result {
	r := &Result{Start: time.Now()}
	b.finish(r, poll.ResultSetupError, poll.ExitSetupError, "", errors.ErrUnsupported)
	return r
}

func (b *Runner) prepareCache() error { return errors.ErrUnsupported }
