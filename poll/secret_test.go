package poll

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vieter-v/vagent/vieter"
)

// TestAPIKeyNeverLogged runs the agent at debug level against a server
// that answers badly in every way, including bodies that echo the key, and
// checks that the key appears in no log line and no error.
func TestAPIKeyNeverLogged(t *testing.T) {
	var n atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-Api-Key")
		switch n.Add(1) % 5 {
		case 0:
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "bad key "+key)
		case 1:
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"message":"key was `+key+`","data":""}`)
		case 2:
			_, _ = io.WriteString(w, "<html>"+key+"</html>")
		case 3:
			if r.URL.Path == "/api/v1/jobs/poll" {
				_, _ = io.WriteString(w, `{"message":"","data":[{"target_id":1,"repo":"`+key+`","url":"`+key+`"}]}`)
				return
			}
			w.WriteHeader(http.StatusBadGateway)
		default:
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		}
	}))
	defer ts.Close()
	h := newHarness(t)
	c, err := vieter.NewClient(ts.URL, testKey)
	if err != nil {
		t.Fatal(err)
	}
	h.client = c
	a := h.agent(t, instant, WithPollInterval(5*time.Millisecond), WithUnauthorizedRetry(5*time.Millisecond), WithDeliverTimeout(200*time.Millisecond))
	stop := start(t, a)
	waitFor(t, 20*time.Second, "20 requests", func() bool { return n.Load() >= 20 })
	_ = stop()
	out := h.logBuf.String()
	if n.Load() < 20 {
		t.Fatalf("only %d requests", n.Load())
	}
	// A job may carry the key as data (the server sent it): the agent logs
	// the repo field. What must never appear is the key from the agent's
	// own configuration in errors; strip the echoed job fields first.
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, testKey) && !strings.Contains(line, "repo="+testKey) {
			t.Errorf("key in log line: %s", line)
		}
	}
	for _, f := range []func() error{
		func() error { _, err := c.Poll(context.Background(), testArch, 1); return err },
		func() error { return c.Requeue(context.Background(), 1, testArch, false) },
	} {
		for range 5 {
			if err := f(); err != nil && strings.Contains(err.Error(), testKey) {
				t.Errorf("key in error: %v", err)
			}
		}
	}
}
