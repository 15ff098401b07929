package lockfile

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestTempsSurviveConcurrentCleanup: writers in one process and a
// RemoveStale loop in "another" (as when `vagent image ls` opens the store
// while the agent pulls) share a tmp directory. Before CreateTemp and
// MkdirTemp, the cleaner could lock a writer's temporary in the moment
// between its creation and the writer's lock, remove it, and the writer's
// rename failed ("no such file or directory").
func TestTempsSurviveConcurrentCleanup(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var cleaned atomic.Int64
	var cleaners sync.WaitGroup
	for range 2 {
		cleaners.Add(1)
		go func() {
			defer cleaners.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := RemoveStale(tmp)
				if err != nil {
					t.Error(err)
					return
				}
				cleaned.Add(int64(n))
			}
		}()
	}
	var writers sync.WaitGroup
	for w := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range 300 {
				dst := filepath.Join(dir, fmt.Sprintf("f-%d-%d", w, i))
				if err := WriteFile(dst, []byte("x"), WriteOptions{TmpDir: tmp}); err != nil {
					t.Errorf("write %d of writer %d: %v", i, w, err)
					return
				}
				p, f, err := MkdirTemp(tmp, "d-")
				if err != nil {
					t.Errorf("MkdirTemp %d of writer %d: %v", i, w, err)
					return
				}
				if err := os.WriteFile(filepath.Join(p, "in-progress"), nil, 0o600); err != nil {
					t.Errorf("the locked directory was removed under its writer: %v", err)
				}
				os.RemoveAll(p)
				f.Close()
			}
		}()
	}
	writers.Wait()
	close(stop)
	cleaners.Wait()
	t.Logf("the cleaners removed %d temporaries caught between creation and lock", cleaned.Load())
}
