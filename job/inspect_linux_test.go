package job_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestInspectKeepsUntilRelease: a build WithInspect selects keeps its
// builder lease, control directory and upper after Run; Inspect runs a
// shell on that upper with a terminal; Release gives everything back. A
// build it does not select keeps nothing, as without the option.
func TestInspectKeepsUntilRelease(t *testing.T) {
	failing := withScript(splitBuild, func(s *script) { s.exitCode = 4 })
	for _, tc := range []struct {
		name   string
		script script
		keep   bool
	}{
		{"failure kept", failing, true},
		{"success not kept", splitBuild, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := sandboxtest.Dir(t)
			images := &fakeImages{rootfs: t.TempDir()}
			sb := newFakeSandbox(t, tc.script)
			b, err := job.New(sb, images, filepath.Join(dir, "build"), job.WithOutDir(filepath.Join(dir, "out"), -1, -1),
				job.WithInspect(func(r poll.Result) bool { return r == poll.ResultFailure }))
			if err != nil {
				t.Fatal(err)
			}
			var log sandboxtest.Buffer
			r := build(t.Context(), b, outcomeJob, "", poll.DefaultLogLimit, &log)
			built := r.Built
			if built.Kept() != tc.keep {
				t.Fatalf("Kept() = %v, want %v (%s)\n%s", built.Kept(), tc.keep, r.Reason, log.String())
			}
			uppers := sb.Uppers()
			runs := func() int {
				e, _ := os.ReadDir(filepath.Join(dir, "build", "runs"))
				return len(e)
			}
			if !tc.keep {
				if _, err := built.Inspect(t.Context(), job.Shell{Attach: func(*os.File) {}}); !errors.Is(err, job.ErrNotKept) {
					t.Errorf("Inspect of a build not kept: %v", err)
				}
				built.Release()
				if images.loans.Load() != 0 || runs() != 0 {
					t.Errorf("a build not kept holds %d loans, %d run directories", images.loans.Load(), runs())
				}
				return
			}
			if images.loans.Load() != 1 || runs() != 1 || len(uppers) != 1 {
				t.Fatalf("kept build: %d loans, %d run directories, %d uppers; want 1 each", images.loans.Load(), runs(), len(uppers))
			}
			if _, err := os.Stat(uppers[0]); err != nil {
				t.Fatalf("kept upper: %v", err)
			}
			attached := false
			code, err := built.Inspect(context.Background(), job.Shell{Term: "vt100", Attach: func(*os.File) { attached = true }})
			if err != nil || code != 0 || !attached {
				t.Fatalf("Inspect: %d, %v, attached %v", code, err, attached)
			}
			specs := sb.Specs()
			sh := specs[len(specs)-1]
			if sh.Upper == nil || sh.Upper.Path != uppers[0] || sh.KeepUpper || sh.Terminal == nil ||
				!slices.Equal(sh.Args, []string{"/bin/bash", "/run/vagent/build.sh", "--inspect"}) || !slices.Contains(sh.Env, "TERM=vt100") {
				t.Errorf("the shell's spec: upper %v keep %v args %q env %q", sh.Upper, sh.KeepUpper, sh.Args, sh.Env)
			}
			if sh.Lower != images.rootfs {
				t.Errorf("the shell runs on %s, want the build's builder %s", sh.Lower, images.rootfs)
			}
			built.Release()
			built.Release()
			if images.loans.Load() != 0 || runs() != 0 {
				t.Errorf("after Release: %d loans, %d run directories", images.loans.Load(), runs())
			}
			if _, err := os.Stat(uppers[0]); !os.IsNotExist(err) {
				t.Errorf("upper after Release: %v", err)
			}
		})
	}
}
