package job

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vieter-v/vagent/poll"
)

// TestNegotiateFlood writes 256 MiB without a line break into the srcinfo
// FIFO, as a hostile PKGBUILD can at any time. The agent answers "fail",
// keeps draining without holding what it read, and its heap stays bounded.
func TestNegotiateFlood(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		wantErr      string
	}{
		{"no newline", "", "length line longer than"},
		{"digits", strings.Repeat("9", 100), "length line longer than"},
		{"huge length", "999999999\n", "999999999 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Runner{opts: defaultOptions(), dir: t.TempDir()}
			if err := os.MkdirAll(b.runsDir(), 0o700); err != nil {
				t.Fatal(err)
			}
			run, err := b.newRun(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer run.remove()
			w, err := os.OpenFile(filepath.Join(run.dir, "srcinfo"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			const total = 256 << 20
			written := make(chan error, 1)
			go func() {
				defer w.Close()
				if _, err := w.WriteString(tc.header); err != nil {
					written <- err
					return
				}
				chunk := []byte(strings.Repeat("A", 1<<20))
				for range total / len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						written <- err
						return
					}
				}
				written <- nil
				// The FIFO is still open for writing by the agent
				// itself (O_RDWR): end the drain as the end of the
				// container does.
				run.closeFIFOs()
			}()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			d := b.negotiate(t.Context(), run, poll.Job{}, nil)
			runtime.ReadMemStats(&after)
			if err := <-written; err != nil {
				t.Fatalf("writing the flood: %v", err)
			}
			if d.err == nil || !errors.Is(d.err, ErrSrcInfo) || !strings.Contains(d.err.Error(), tc.wantErr) {
				t.Errorf("decision error %v, want %q", d.err, tc.wantErr)
			}
			if d.build || d.skip {
				t.Errorf("decision build=%v skip=%v, want fail", d.build, d.skip)
			}
			grew := int64(after.TotalAlloc) - int64(before.TotalAlloc)
			t.Logf("allocated %d KiB while draining %d MiB", grew>>10, total>>20)
			if grew > 4<<20 {
				t.Errorf("the agent allocated %d MiB reading a %d MiB flood", grew>>20, total>>20)
			}
		})
	}
}

// TestNegotiateWithin: from the first byte of the srcinfo FIFO on, the
// length line and the .SRCINFO have srcInfoWithin to arrive; the time
// before the first byte does not count.
func TestNegotiateWithin(t *testing.T) {
	const within = 200 * time.Millisecond
	srcinfo := "pkgbase = a\n\tpkgver = 1\n\tpkgrel = 1\n\tarch = any\n\npkgname = a\n"
	for _, tc := range []struct {
		name  string
		delay time.Duration // before the first byte
		parts []string      // written one after the other
		pause time.Duration // between the parts
		build bool
	}{
		// The script starts sending long after the bound: still fine.
		{"late start", 3 * within, []string{fmt.Sprintf("%d\n%s", len(srcinfo), srcinfo)}, 0, true},
		{"slow but within", 0, []string{fmt.Sprintf("%d", len(srcinfo)), fmt.Sprintf("\n%s", srcinfo)}, within / 4, true},
		{"no newline", 0, []string{"12"}, 0, false},
		{"short body", 0, []string{fmt.Sprintf("%d\n%s", len(srcinfo)+1, srcinfo)}, 0, false},
		{"rest after the bound", 0, []string{"7", fmt.Sprintf("0\n%s", srcinfo)}, 3 * within, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := defaultOptions()
			o.srcInfoWithin = within
			b := &Runner{opts: o, dir: t.TempDir()}
			if err := os.MkdirAll(b.runsDir(), 0o700); err != nil {
				t.Fatal(err)
			}
			run, err := b.newRun(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer run.remove()
			w, err := os.OpenFile(filepath.Join(run.dir, "srcinfo"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			firstByte := make(chan time.Time, 1)
			go func() {
				time.Sleep(tc.delay)
				for i, p := range tc.parts {
					if i > 0 {
						time.Sleep(tc.pause)
					} else {
						firstByte <- time.Now()
					}
					if _, err := w.WriteString(p); err != nil {
						return
					}
				}
			}()
			done := make(chan decision, 1)
			go func() { done <- b.negotiate(t.Context(), run, poll.Job{}, nil) }()
			// The answer, as build.sh reads it; then the end of the
			// container closes the FIFOs, which ends negotiate's drain.
			answer, err := readDecision(run, tc.delay+10*time.Second)
			answered := time.Now()
			run.closeFIFOs()
			d := <-done
			if err != nil {
				t.Fatalf("no answer within 10s of the first byte (bound %v): %v", within, err)
			}
			if d.build != tc.build {
				t.Fatalf("build %v (%v), want %v", d.build, d.err, tc.build)
			}
			if tc.build {
				if answer != "build\n" {
					t.Errorf("answer %q", answer)
				}
				return
			}
			if !errors.Is(d.err, ErrSrcInfo) || d.reason != "incomplete .SRCINFO after 200ms" || answer != "fail incomplete .SRCINFO after 200ms\n" {
				t.Errorf("error %v, reason %q, answer %q", d.err, d.reason, answer)
			}
			if took := answered.Sub(<-firstByte); took < within || took > within+5*time.Second {
				t.Errorf("answered %v after the first byte, bound %v", took, within)
			}
		})
	}
}

// readDecision reads the agent's answer from the decision FIFO, as build.sh
// does, waiting at most wait.
func readDecision(run *runDir, wait time.Duration) (string, error) {
	f, err := os.OpenFile(filepath.Join(run.dir, "decision"), os.O_RDONLY, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return "", err
	}
	buf := make([]byte, 128)
	n, err := f.Read(buf)
	return string(buf[:n]), err
}
