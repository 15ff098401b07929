package vieter_test

import (
	"errors"
	"testing"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/vieter"
)

// TestHealthAndCheckKey against the test server: Health needs no key,
// CheckKey tells an accepted key from a rejected one and changes nothing
// (no job is popped).
func TestHealthAndCheckKey(t *testing.T) {
	const key = "check-key-0123456789"
	srv, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey(key))
	id := srv.AddTarget(vieterserver.Target{Kind: "git", URL: "https://example.org/x.git", Repo: "r"})
	if err := srv.Enqueue(id, "x86_64", false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key     string
		wantErr error
	}{{key, nil}, {"wrong-key-0123456789", vieter.ErrUnauthorized}} {
		c, err := vieter.NewClient(ts.URL, tc.key, vieter.WithHTTPClient(ts.Client()))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Health(t.Context()); err != nil {
			t.Errorf("Health: %v", err)
		}
		if err := c.CheckKey(t.Context()); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
			t.Errorf("CheckKey with %s: %v, want %v", tc.key, err, tc.wantErr)
		}
	}
	if q := srv.Queued("x86_64"); len(q) != 1 {
		t.Errorf("queue %v: the checks changed it", q)
	}
	c, _ := vieter.NewClient("http://127.0.0.1:1", key)
	if err := c.Health(t.Context()); err == nil {
		t.Error("Health of a closed port: no error")
	}
}
