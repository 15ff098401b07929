//go:build !linux

package job

import (
	"context"
	"errors"
	"io"

	"github.com/vieter-v/vagent/poll"
)

func (b *Runner) run(ctx context.Context, job poll.Job, srcDir string, log io.Writer, built *Built) ending {
	return ending{result: poll.ResultSetupError, code: poll.ExitSetupError, err: errors.ErrUnsupported, setup: true}
}

func (b *Runner) prepareCache() error { return errors.ErrUnsupported }
