package job

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/poll"
)

// TestThirtyJobsThroughFaults: 30 jobs on 3 slots against a server where
// 20% of the answers on every route are 500s and 10% are 200s with a
// malformed body (nothing done): the agent's loop, the skip check and the
// build's real publishing path. Exactly one log per job, every package in
// the repository, every log naming its confirmed package. The container
// is left out: what is tested is the server boundary.
func TestThirtyJobsThroughFaults(t *testing.T) {
	const key = "a-key-of-some-length"
	srv, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey(key), vieterserver.WithFaults(vieterserver.FaultConfig{
		Rate: 0.3, Seed: 11, Kinds: []vieterserver.Fault{vieterserver.Fault5xx, vieterserver.Fault5xx, vieterserver.FaultMalformedJSON}}))
	b := testBuilder(t, ts.URL, key, 12)
	client := b.opts.server
	files := map[int]string{}
	var targets []int
	for i := range 30 {
		id := srv.AddTarget(vieterserver.Target{Kind: "git", URL: fmt.Sprintf("https://example.org/p%d.git", i), Repo: "bur"})
		file, _ := packageFile(t, fmt.Sprintf("pkg%d", id), "1-1")
		files[id] = file
		targets = append(targets, id)
		if err := srv.Enqueue(id, "x86_64", false); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	exec := poll.ExecutorFunc(func(ctx context.Context, j poll.Job, log io.Writer) (poll.Outcome, error) {
		name := fmt.Sprintf("pkg%d", j.TargetID)
		if skip, err := b.hasVersion(ctx, j.Repo, name, "1-1"); err != nil || skip {
			return poll.Outcome{ExitCode: 1, Detail: "skip check"}, err
		}
		file, open := packageFile(t, name, "1-1")
		f := open()
		if err := b.publishFile(ctx, j.Repo, file, f, log); err != nil {
			return poll.Outcome{ExitCode: ExitPublish, Err: err}, nil
		}
		return poll.Outcome{Detail: "published " + file}, nil
	})
	a, err := poll.New(client, exec, poll.WithArch("x86_64"), poll.WithDataDir(dir), poll.WithSlots(3),
		poll.WithPollInterval(20*time.Millisecond), poll.WithBackoff(time.Millisecond, 20*time.Millisecond), poll.WithFsync(false))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.After(2 * time.Minute)
	for len(srv.Logs()) < 30 || a.Status().PendingLogs > 0 {
		select {
		case <-deadline:
			t.Fatalf("%d logs after 2 minutes", len(srv.Logs()))
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	perTarget := map[int]int{}
	for _, l := range srv.Logs() {
		perTarget[l.TargetID]++
		c := string(l.Content)
		name := fmt.Sprintf("pkg%d", l.TargetID)
		if l.ExitCode != 0 || !strings.Contains(c, "vagent: "+name+" 1-1 confirmed in bur (") ||
			!strings.Contains(c, "vagent: success (published "+files[l.TargetID]+"); exit code 0") {
			t.Errorf("log of target %d: exit %d\n%s", l.TargetID, l.ExitCode, c)
		}
	}
	for _, id := range targets {
		if perTarget[id] != 1 {
			t.Errorf("target %d: %d logs, want 1", id, perTarget[id])
		}
	}
	if n := len(srv.Packages("bur", "x86_64")); n != 30 {
		t.Errorf("%d packages in the repository, want 30", n)
	}
	f := srv.Faults()
	for _, route := range []string{vieterserver.RoutePoll, vieterserver.RouteLogUpload, vieterserver.RoutePublish, vieterserver.RouteRepoFile} {
		st := srv.Statuses(route)
		if st[500]+st[502]+st[503] == 0 {
			t.Errorf("no 5xx on %s: %v", route, st)
		}
	}
	if f[vieterserver.Fault5xx] == 0 || f[vieterserver.FaultMalformedJSON] == 0 {
		t.Errorf("faults %v", f)
	}
	t.Logf("faults %v", f)
}
