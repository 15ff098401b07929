package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vieter-v/vagent/poll"
)

// ErrNotKept: Built.Inspect of a build that kept nothing (WithInspect did
// not select it, or it ended before its sandbox ran).
var ErrNotKept = errors.New("the build kept nothing to inspect")

// keptBuild is what a build selected by WithInspect keeps for
// Built.Inspect: the workspace (builder lease, control directory,
// package cache) and the run's upper directory.
type keptBuild struct {
	b    *Runner
	job  poll.Job
	ws   *workspace
	ran  *ran
	once sync.Once
}

func (k *keptBuild) release() {
	k.once.Do(func() {
		k.ran.release()
		k.ws.release()
	})
}

// inspectResult is how the build ended for WithInspect: as Run reports it,
// but a build its deadline stopped is a timeout (Run reports it
// cancelled; poll.RunJob tells the two apart the same way).
func inspectResult(ctx context.Context, r poll.Result) poll.Result {
	if r == poll.ResultCancelled && errors.Is(context.Cause(ctx), poll.ErrJobTimeout) {
		return poll.ResultTimeout
	}
	return r
}

// Kept tells whether the build kept its tree for Inspect; the caller must
// then Release it.
func (b *Built) Kept() bool { return b != nil && b.kept != nil }

// Inspect opens an interactive shell as the builder user in the build's
// tree as the build left it (the sandbox's upper directory, on the same
// builder, with the same mounts, limits and network), in the PKGBUILD's
// directory, through a pseudo-terminal the container makes
// (makechrootpkg -x, pkgctl build --inspect). It returns when the shell
// exits, with its exit status; everything the shell ran is stopped and
// its mounts removed, as after a build. What the shell changes stays in
// the kept tree until Release. ctx stops the shell.
func (b *Built) Inspect(ctx context.Context, sh Shell) (int, error) {
	if !b.Kept() {
		return 0, ErrNotKept
	}
	if sh.Attach == nil {
		return 0, fmt.Errorf("%w: a shell needs a terminal to attach", ErrBadConfig)
	}
	if sh.Term == "" {
		sh.Term = "xterm"
	}
	k := b.kept
	spec := k.b.spec(k.job, k.ws, io.Discard)
	spec.Args = []string{"/bin/bash", ctlMount + "/build.sh", "--inspect"}
	spec.Env = append(spec.Env, "TERM="+sh.Term)
	spec.KeepUpper, spec.Upper, spec.Terminal = false, k.ran.res.Upper, sh.Attach
	res, err := k.b.sb.Run(ctx, spec)
	if err != nil {
		return 0, fmt.Errorf("inspecting the build: %w", err)
	}
	return res.ExitCode, nil
}

// Release releases what a kept build holds: its tree, the builder lease,
// the control directory and the package cache. It is safe to call more
// than once, and on a build that kept nothing.
func (b *Built) Release() {
	if b.Kept() {
		b.kept.release()
	}
}
