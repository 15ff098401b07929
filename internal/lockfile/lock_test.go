package lockfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRemoveStale removes the temporaries no writer holds and keeps the
// locked one, also when a tree has read-only directories.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live")
	dead := filepath.Join(dir, "dead")
	for _, d := range []string{live, filepath.Join(dead, "ro", "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dead, "ro"), 0o500); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, err := Lock(f, true, false); !ok || err != nil {
		t.Fatalf("Lock = %v, %v", ok, err)
	}
	n, err := RemoveStale(dir)
	if err != nil || n != 1 {
		t.Fatalf("RemoveStale = %d, %v; want 1, nil", n, err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("locked temporary removed: %v", err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("stale temporary kept: %v", err)
	}
}

// TestLockContext waits for a held lock until the context ends.
func TestLockContext(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	a, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if ok, err := Lock(a, true, true); !ok || err != nil {
		t.Fatalf("Lock = %v, %v", ok, err)
	}
	if ok, _ := Lock(b, false, false); ok {
		t.Fatal("shared lock taken while an exclusive one is held")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := LockContext(ctx, b, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LockContext = %v, want deadline exceeded", err)
	}
	a.Close()
	if err := LockContext(t.Context(), b, true); err != nil {
		t.Fatalf("LockContext after release = %v", err)
	}
}
