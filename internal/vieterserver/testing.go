package vieterserver

import (
	"net/http/httptest"
	"testing"
)

// NewTest starts a server configured by opts on a local httptest server
// that is closed when the test ends.
func NewTest(tb testing.TB, opts ...Option) (*Server, *httptest.Server) {
	tb.Helper()
	s, err := New(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(s)
	tb.Cleanup(ts.Close)
	return s, ts
}
