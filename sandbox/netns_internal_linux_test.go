package sandbox

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOnNewThreadRestoresThreads: a thread that onNewThread moved into
// another network namespace is put back and lives on, so that no child
// forked from it gets its parent-death signal; fn ran in the namespace it
// made.
func TestOnNewThreadRestoresThreads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	nsIno := func(p string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	host := nsIno("/proc/self/ns/net")
	var tids []int
	for range 10 {
		var tid int
		var inside uint64
		if err := onNewThread(func() error {
			tid = unix.Gettid()
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return err
			}
			inside = nsIno("/proc/thread-self/ns/net")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if inside == host {
			t.Fatal("fn did not run in a new network namespace")
		}
		tids = append(tids, tid)
	}
	// A thrown-away thread ends as soon as its goroutine has returned,
	// microseconds after onNewThread did: a pause lets that happen.
	time.Sleep(100 * time.Millisecond)
	for _, tid := range tids {
		task := filepath.Join("/proc/self/task", strconv.Itoa(tid))
		if _, err := os.Stat(task); err != nil {
			t.Errorf("thread %d ended: %v", tid, err)
			continue
		}
		if got := nsIno(filepath.Join(task, "ns/net")); got != host {
			t.Errorf("thread %d is left in network namespace %d, not the host's %d", tid, got, host)
		}
	}
}
