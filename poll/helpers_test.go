package poll

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/vieter"
)

const (
	testKey  = "k3y-7f1c9e-do-not-leak"
	testArch = "x86_64"
)

// harness is a test server plus a client for it.
type harness struct {
	srv    *vieterserver.Server
	ts     *httptest.Server
	client *vieter.Client
	dir    string
	logBuf *syncBuffer
	log    *logrus.Logger
}

func newHarness(t testing.TB, opts ...vieterserver.Option) *harness {
	t.Helper()
	srv, ts := vieterserver.NewTest(t, append([]vieterserver.Option{vieterserver.WithAPIKey(testKey)}, opts...)...)
	c, err := vieter.NewClient(ts.URL, testKey, vieter.WithHTTPClient(ts.Client()))
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	log := logrus.New()
	log.SetOutput(buf)
	log.SetLevel(logrus.DebugLevel)
	return &harness{srv: srv, ts: ts, client: c, dir: t.TempDir(), logBuf: buf, log: log}
}

// agent makes an agent with fast test defaults; opts override them.
func (h *harness) agent(t testing.TB, exec Executor, opts ...Option) *Agent {
	t.Helper()
	base := []Option{WithArch(testArch), WithDataDir(h.dir), WithSlots(3), WithPollInterval(50 * time.Millisecond),
		WithBackoff(5*time.Millisecond, 50*time.Millisecond), WithUnauthorizedRetry(200 * time.Millisecond),
		WithGracePeriod(time.Second), WithDeliverTimeout(5 * time.Second), WithLogger(h.log)}
	a, err := New(h.client, exec, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// addJobs adds n targets with one queued job each and returns their ids.
func (h *harness) addJobs(t testing.TB, n int, force bool) []int {
	t.Helper()
	var ids []int
	for i := range n {
		id := h.srv.AddTarget(vieterserver.Target{Kind: "git", URL: fmt.Sprintf("https://example.org/p%d.git", i), Repo: "bur"})
		if err := h.srv.Enqueue(id, testArch, force); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// start runs a in the background; stop cancels it and returns Run's error.
func start(t testing.TB, a *Agent) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(30 * time.Second):
				err = fmt.Errorf("agent did not stop")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// spoolFiles globs pattern below <dir>/logs.
func spoolFiles(t testing.TB, dir, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "logs", pattern))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// instant is an executor that writes one line and succeeds.
var instant = ExecutorFunc(func(_ context.Context, j Job, log io.Writer) (Outcome, error) {
	fmt.Fprintf(log, "building target %d\n", j.TargetID)
	return Outcome{}, nil
})

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// splitHeader parses the header at the top of an uploaded log (LogHeader):
// its fields by key, and the rest of the log. ok is false when the log
// does not start with a header.
func splitHeader(content []byte) (fields map[string]string, body string, ok bool) {
	s := string(content)
	head, body, found := strings.Cut(s, "\n\n")
	if !found || !strings.HasPrefix(s, "vagent: ") {
		return nil, s, false
	}
	fields = map[string]string{}
	for _, line := range strings.Split(head, "\n") {
		kv, ok := strings.CutPrefix(line, "vagent: ")
		k, v, ok2 := strings.Cut(kv, ": ")
		if !ok || !ok2 {
			return nil, s, false
		}
		fields[k] = v
	}
	return fields, body, true
}

// logBody returns an uploaded log without its header, failing t when it
// has none.
func logBody(t testing.TB, content []byte) string {
	t.Helper()
	fields, body, ok := splitHeader(content)
	if !ok || fields["target"] == "" {
		t.Errorf("the log does not start with a header: %q", content)
		return string(content)
	}
	return body
}
