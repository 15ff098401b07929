package poll

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// DefaultLogLimit is the default cap of one build's log (WithLogLimit).
const DefaultLogLimit = 64 << 20

// DefaultTimeout is the build timeout of jobs without one (Vieter's
// default timeout; WithDefaultTimeout).
const DefaultTimeout = time.Hour

// capWriter passes at most limit bytes to w; what comes after is counted
// and dropped, with one line in the log that says so. Writes never fail
// for the writer's sake, so a build that floods its output runs on (to
// its timeout) without growing the spool or the agent.
type capWriter struct {
	mu      sync.Mutex
	w       io.Writer
	limit   int64
	written int64
	dropped int64
	said    bool  // the line about the limit was written
	err     error // the first write error of w
}

func (c *capWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	if c.err != nil {
		return 0, c.err
	}
	room := max(c.limit-c.written, 0)
	if int64(len(p)) > room {
		c.dropped += int64(len(p)) - room
		p = p[:room]
	}
	if len(p) > 0 {
		m, err := c.w.Write(p)
		c.written += int64(m)
		if err != nil {
			c.err = err
			return m, err
		}
	}
	if c.dropped > 0 && !c.said {
		c.said = true
		fmt.Fprintf(c.w, "\nvagent: the build's output exceeded the log limit of %d bytes; the rest is dropped\n", c.limit)
	}
	return n, nil
}

// note returns the line that reports the dropped bytes, "" for none.
func (c *capWriter) note() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped == 0 {
		return ""
	}
	return fmt.Sprintf("vagent: %d bytes of output past the log limit of %d bytes were dropped", c.dropped, c.limit)
}
