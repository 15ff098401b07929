package builder_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/oci"
)

// signalWriter is a setup log that closes seen once want appeared in it.
type signalWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestLayerWriteStops: a hostile base image's setup leaves a 24 GiB sparse
// file, within the image budget, which the builder layer would hold as 24
// GiB of zeros (minutes of compression). The job that waits for the
// builder is cancelled while the layer is written: it returns within a
// second, and so does the preparation itself — the Manager closes at once
// and nothing of the half-written builder is left.
func TestLayerWriteStops(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := pushed(t, reg, "sparse", fakeBase(t, map[string]string{"sparse": "25769803776"}))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	log := &signalWriter{want: "writing the builder layer", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		l, err := e.m.Acquire(ctx, base, log)
		if err == nil {
			l.Release()
		}
		done <- err
	}()
	select {
	case <-log.seen:
	case err := <-done:
		t.Fatalf("the preparation ended before writing its layer: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "left a sparse file of 25769803776 bytes") {
		t.Fatalf("the setup did not leave the sparse file:\n%s", log.String())
	}
	time.Sleep(200 * time.Millisecond) // well into the 24 GiB
	start := time.Now()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire: %v, want context.Canceled", err)
	}
	returned := time.Since(start)
	e.m.Close()
	closed := time.Since(start)
	t.Logf("cancelled during the layer write: Acquire returned after %s, the preparation stopped after %s", returned.Round(time.Millisecond), closed.Round(time.Millisecond))
	if returned > time.Second || closed > time.Second {
		t.Errorf("Acquire returned after %s, the preparation stopped after %s; want both within a second", returned, closed)
	}
	ents, err := os.ReadDir(filepath.Join(e.dir, "builders", "tmp"))
	if err != nil || len(ents) > 0 {
		t.Errorf("builders/tmp after the cancelled preparation: %v, %v", ents, err)
	}
}

// TestLayerBudget: a sparse file larger than the image budget fails the
// layer at its header, at once, with oci.ErrBudgetExceeded.
func TestLayerBudget(t *testing.T) {
	e := newEnv(t)
	store, err := oci.NewStore(filepath.Join(e.dir, "images-small"), oci.WithSync(false), oci.WithBudget(oci.Budget{Bytes: 1 << 30}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := builder.New(store, e.sb, filepath.Join(e.dir, "builders-small"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	reg := startRegistry(t)
	base := pushed(t, reg, "sparse2", fakeBase(t, map[string]string{"sparse": "2147483648"}))
	log := &signalWriter{want: "writing the builder layer", seen: make(chan struct{})}
	_, err = m.Acquire(t.Context(), base, log)
	if !errors.Is(err, oci.ErrBudgetExceeded) || !strings.Contains(err.Error(), "opt/huge declares 2147483648") {
		t.Fatalf("Acquire: %v, want oci.ErrBudgetExceeded naming opt/huge\n%s", err, log.String())
	}
	ents, err := os.ReadDir(filepath.Join(e.dir, "builders-small", "tmp"))
	if err != nil || len(ents) > 0 {
		t.Errorf("builders tmp after the refused layer: %v, %v", ents, err)
	}
}
