package poll

import (
	"strings"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"
)

// TestStatusRedactsURLUserinfo: /status (reachable from builds on the
// host network) never shows the userinfo of a job's URL.
func TestStatusRedactsURLUserinfo(t *testing.T) {
	h := newHarness(t)
	id := h.srv.AddTarget(vieterserver.Target{Kind: "git", URL: "https://ghp_S3CRET@example.org/p.git", Repo: "bur"})
	if err := h.srv.Enqueue(id, testArch, false); err != nil {
		t.Fatal(err)
	}
	exec := &blocking{started: make(chan int, 1)}
	a := h.agent(t, exec)
	stop := start(t, a)
	<-exec.started
	st := a.Status()
	found := false
	for _, s := range st.Slots {
		if s.Job != nil {
			found = true
			if strings.Contains(s.Job.URL, "S3CRET") || s.Job.URL != "https://redacted@example.org/p.git" {
				t.Errorf("status shows %q", s.Job.URL)
			}
		}
	}
	if !found {
		t.Fatal("no running slot in the status")
	}
	pending, err := Pending(h.dir)
	if err != nil || len(pending) != 1 || strings.Contains(pending[0].Job.URL, "S3CRET") {
		t.Errorf("Pending = %+v, %v", pending, err)
	}
	done := make(chan error, 1)
	go func() { done <- stop() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not stop")
	}
}
