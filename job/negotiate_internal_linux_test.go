package job

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

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
			run, err := b.newRun(nil)
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
