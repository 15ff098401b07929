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

type keptBuild struct{}

// Kept is false: nothing is kept on this platform.
func (b *Built) Kept() bool { return false }

// Inspect is not supported on this platform.
func (b *Built) Inspect(context.Context, Shell) (int, error) { return 0, errors.ErrUnsupported }

// Release does nothing on this platform.
func (b *Built) Release() {}

// CheckInstall is not supported on this platform.
func CheckInstall(string) error { return errors.ErrUnsupported }
