package build

import (
	"bytes"
	"strings"
	"testing"
)

// TestCappedWriter: the first limit bytes pass, then one truncation line,
// then nothing, whatever the sizes of the writes.
func TestCappedWriter(t *testing.T) {
	for _, sizes := range [][]int{{10}, {3, 3, 3, 3}, {100}, {4, 100, 1}, {5, 5, 5}} {
		var buf bytes.Buffer
		w := newCappedWriter(&buf, 10)
		total := 0
		for i, n := range sizes {
			p := bytes.Repeat([]byte{byte('a' + i)}, n)
			if m, err := w.Write(p); err != nil || m != n {
				t.Fatalf("%v: write %d = %d, %v", sizes, n, m, err)
			}
			total += n
		}
		out := buf.String()
		body, rest, cut := strings.Cut(out, "\nvagent: log truncated")
		wantBody := min(total, 10)
		if len(body) != wantBody {
			t.Errorf("%v: %d bytes passed, want %d", sizes, len(body), wantBody)
		}
		if cut != (total > 10) || strings.Count(out, "log truncated") > 1 {
			t.Errorf("%v: output %q", sizes, out)
		}
		if cut && !strings.HasSuffix(rest, "the rest is discarded\n") {
			t.Errorf("%v: truncation line %q", sizes, rest)
		}
	}
}
