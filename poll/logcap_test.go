package poll

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestLogLimit: a build that floods its output gets a log of the limit,
// a line that says the rest was dropped, and the footer; the spool file
// stays bounded; the agent goes on.
func TestLogLimit(t *testing.T) {
	h := newHarness(t)
	const limit = 64 << 10
	flood := ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
		line := strings.Repeat("x", 1023) + "\n"
		for range 10 << 10 { // 10 MiB in 1 KiB writes
			if _, err := io.WriteString(log, line); err != nil {
				return Outcome{}, err
			}
		}
		return Outcome{}, nil
	})
	h.addJobs(t, 1, false)
	stop := start(t, h.agent(t, flood, WithLogLimit(limit)))
	waitFor(t, 20*time.Second, "the log", func() bool { return len(h.srv.Logs()) == 1 })
	_ = stop()
	c := string(h.srv.Logs()[0].Content)
	if len(c) > limit+1024 {
		t.Errorf("log of %d bytes, want about %d", len(c), limit)
	}
	for _, want := range []string{
		"vagent: the build's output exceeded the log limit of 65536 bytes; the rest is dropped\n",
		"vagent: 10420224 bytes of output past the log limit of 65536 bytes were dropped\n",
		"vagent: success; exit code 0; took ",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("log lacks %q; its end:\n%s", want, c[max(0, len(c)-400):])
		}
	}
	if strings.Count(c, "exceeded the log limit") != 1 {
		t.Errorf("the limit line is repeated")
	}
	if _, err := New(h.client, flood, WithArch(testArch), WithDataDir(t.TempDir()), WithLogLimit(10)); err == nil {
		t.Error("a 10-byte limit accepted")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://example.org/a.git":           "https://example.org/a.git",
		"https://ghp_T0K3N@github.com/a/b":    "https://redacted@github.com/a/b",
		"https://user:pass@example.org/x?y=1": "https://redacted@example.org/x?y=1",
		"::not a url@with-at":                 "[redacted URL]",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
