package build

import (
	"fmt"
	"io"
)

// DefaultLogLimit is the default cap on what a build's processes write to
// its log (see WithLogLimit).
const DefaultLogLimit = 64 << 20

// cappedWriter passes the first limit bytes to w, then one line saying that
// the log was truncated, and discards the rest (reporting it written, so
// that the build is not stopped by a write error). It is used by one
// goroutine at a time: the sandbox copies a run's output from one pipe.
type cappedWriter struct {
	w     io.Writer
	limit int64
	left  int64
	cut   bool
}

func newCappedWriter(w io.Writer, limit int64) *cappedWriter {
	return &cappedWriter{w: w, limit: limit, left: limit}
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if c.cut {
		return len(p), nil
	}
	if int64(len(p)) <= c.left {
		n, err := c.w.Write(p)
		c.left -= int64(n)
		return n, err
	}
	n, err := c.w.Write(p[:c.left])
	c.left -= int64(n)
	if err != nil {
		return n, err
	}
	c.cut = true
	if _, err := fmt.Fprintf(c.w, "\nvagent: log truncated: the build wrote more than %d bytes, the rest is discarded\n", c.limit); err != nil {
		return n, err
	}
	return len(p), nil
}
