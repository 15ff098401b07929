package poll

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// newEntry creates a spool entry with log content and finishes it.
func newEntry(t *testing.T, sp *spool, j Job, content string, finish bool) *spoolEntry {
	t.Helper()
	e := &spoolEntry{ID: newEntryID(time.Unix(1700000000, 5), j), Job: j, Arch: testArch, Slot: 1, Start: 1700000000}
	f, err := sp.create(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(f, content); err != nil {
		t.Fatal(err)
	}
	if finish {
		e.State, e.End, e.ExitCode, e.Result, e.Size = stateFinished, 1700000060, 3, ResultFailure, int64(len(content))
		if err := sp.update(f, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return e
}

func readBody(t *testing.T, sp *spool, e *spoolEntry) string {
	t.Helper()
	f, body, err := sp.body(e)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var entryCmp = cmp.Comparer(func(a, b *spoolEntry) bool {
	return a.ID == b.ID && a.Job == b.Job && a.Arch == b.Arch && a.Slot == b.Slot && a.Start == b.Start && a.End == b.End &&
		a.ExitCode == b.ExitCode && a.Result == b.Result && a.State == b.State && a.Size == b.Size && a.Requeue == b.Requeue &&
		a.Requeued == b.Requeued
})

// TestSpoolRoundTrip: one file per entry, whose header survives hostile
// job fields and whose body is exactly the log.
func TestSpoolRoundTrip(t *testing.T) {
	for _, fsync := range []bool{false, true} {
		t.Run(fmt.Sprint("fsync=", fsync), func(t *testing.T) {
			dir := t.TempDir()
			sp, err := openSpool(dir, testArch, fsync)
			if err != nil {
				t.Fatal(err)
			}
			hostile := Job{TargetID: 7, Kind: "git", URL: "https://x/\n\"}{" + strings.Repeat("ü", 3000), Branch: "a\x00b",
				Repo: "r\r\n", BaseImage: strings.Repeat("i", 600), Force: true, Timeout: 9}
			e := newEntry(t, sp, hostile, "line 1\nline 2\n", true)
			got, err := sp.list(false)
			if err != nil || len(got) != 1 {
				t.Fatalf("list = %v, %v", got, err)
			}
			if diff := cmp.Diff(e, got[0], entryCmp); diff != "" {
				t.Errorf("entry (-want +got):\n%s", diff)
			}
			if b := readBody(t, sp, got[0]); b != "line 1\nline 2\n" {
				t.Errorf("body %q", b)
			}
			// Requeue state updates alternate between the copies.
			got[0].Requeue, got[0].Requeued = true, true
			if err := sp.save(got[0]); err != nil {
				t.Fatal(err)
			}
			again, _ := sp.list(false)
			if !again[0].Requeued || again[0].seq != 3 {
				t.Errorf("after save: %+v", again[0])
			}
			if files, _ := filepath.Glob(filepath.Join(dir, "logs", "pending", "*")); len(files) != 1 {
				t.Errorf("spool files %v, want one", files)
			}
			if err := sp.remove(again[0]); err != nil {
				t.Fatal(err)
			}
			if files, _ := filepath.Glob(filepath.Join(dir, "logs", "pending", "*")); len(files) != 0 {
				t.Errorf("spool files after remove %v", files)
			}
		})
	}
}

// TestSpoolTornHeader: a damaged newest header copy falls back to the
// previous state; a damaged header with a valid name becomes a running
// entry of that job; anything else is kept aside in logs/rejected.
func TestSpoolTornHeader(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, testArch, false)
	if err != nil {
		t.Fatal(err)
	}
	// Copy B (sequence 2, finished) torn: copy A (running) wins.
	e := newEntry(t, sp, Job{TargetID: 1}, "abc", true)
	corrupt(t, sp.logPath(e), preambleSize+e.slot+40)
	// Both copies torn: rebuilt from the name (target 2, forced).
	e2 := newEntry(t, sp, Job{TargetID: 2, Force: true}, "def", true)
	corrupt(t, sp.logPath(e2), preambleSize+40)
	corrupt(t, sp.logPath(e2), preambleSize+e2.slot+40)
	// Empty file (torn creation) with a valid name: rebuilt too.
	id3 := newEntryID(time.Unix(1700000001, 0), Job{TargetID: 3})
	if err := os.WriteFile(filepath.Join(sp.pending, id3+".log"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// No header, no valid name: rejected.
	if err := os.WriteFile(filepath.Join(sp.pending, "stray.log"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := sp.list(false)
	if err == nil || !errors.Is(err, errBadHeader) {
		t.Errorf("list error %v, want the stray file reported", err)
	}
	if len(got) != 3 {
		t.Fatalf("entries %+v", got)
	}
	if got[0].State != stateRunning || got[0].Job.TargetID != 1 || readBody(t, sp, got[0]) != "abc" {
		t.Errorf("torn copy B: %+v", got[0])
	}
	want2 := Job{TargetID: 2, Force: true}
	if got[1].ID != e2.ID || got[1].Job != want2 || got[1].State != stateRunning || got[1].Arch != testArch || got[1].Start != 1700000000 {
		t.Errorf("rebuilt entry %+v", got[1])
	}
	if got[2].ID != id3 || got[2].Job.TargetID != 3 || got[2].Job.Force {
		t.Errorf("rebuilt empty entry %+v", got[2])
	}
	// The rebuilt entries were written back with a valid header.
	for _, e := range got[1:] {
		if _, err := readEntry(sp.logPath(e)); err != nil {
			t.Errorf("%s after list: %v", e.ID, err)
		}
	}
	if _, err := os.Stat(filepath.Join(sp.rejected, "stray.log")); err != nil {
		t.Errorf("stray file not kept aside: %v", err)
	}
	// The damaged file of the rebuilt entry is kept aside too; the empty
	// one had nothing to keep.
	if b, err := os.ReadFile(filepath.Join(sp.rejected, e2.ID+".log")); err != nil || !strings.Contains(string(b), "def") {
		t.Errorf("damaged entry not kept aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sp.rejected, id3+".log")); err == nil {
		t.Error("an empty file was kept aside")
	}
}

// TestSpoolTruncatedLog: a finished header with a log shorter than it
// says (its end lost in a power loss) reads as an interrupted build.
func TestSpoolTruncatedLog(t *testing.T) {
	sp, err := openSpool(t.TempDir(), testArch, false)
	if err != nil {
		t.Fatal(err)
	}
	e := newEntry(t, sp, Job{TargetID: 1}, "0123456789", true)
	if err := os.Truncate(sp.logPath(e), e.bodyOffset()+4); err != nil {
		t.Fatal(err)
	}
	got, err := readEntry(sp.logPath(e))
	if err != nil || got.State != stateRunning {
		t.Fatalf("entry %+v, %v: want running", got, err)
	}
}

// TestInterruptedEntryDelivered: a spool entry whose header was lost is
// handed back and reported by the next run.
func TestInterruptedEntryDelivered(t *testing.T) {
	h := newHarness(t)
	h.addJobs(t, 1, true)
	h2srvDrain(t, h)
	sp, err := openSpool(h.dir, testArch, true)
	if err != nil {
		t.Fatal(err)
	}
	id := newEntryID(time.Now(), Job{TargetID: 1, Force: true})
	if err := os.WriteFile(filepath.Join(sp.pending, id+".log"), make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, h.agent(t, instant))
	// The interrupted log and, after the requeue, the rebuild's, in either order.
	waitFor(t, 10*time.Second, "two logs", func() bool { return len(h.srv.Logs()) == 2 })
	codes := map[int]string{}
	for _, l := range h.srv.Logs() {
		if l.TargetID != 1 {
			t.Errorf("log of target %d", l.TargetID)
		}
		codes[l.ExitCode] = string(l.Content)
	}
	if _, body, _ := splitHeader([]byte(codes[0])); !strings.Contains(codes[ExitInterrupted], "agent stopped during this build") || !strings.HasPrefix(body, "building target 1\n\nvagent: success") {
		t.Errorf("logs by exit code: %v", codes)
	}
	if rq := h.srv.Requests("jobs.queue"); rq != 1 {
		t.Errorf("%d requeues, want 1", rq)
	}
}

func corrupt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("XX"), off); err != nil {
		t.Fatal(err)
	}
}

// TestGroupSync: concurrent callers share syncs, and each caller's sync
// started after it called.
func TestGroupSync(t *testing.T) {
	var g groupSync
	var syncs, inside atomic.Int64
	var wg sync.WaitGroup
	const callers = 50
	var startedSyncs atomic.Int64
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			before := startedSyncs.Load()
			if err := g.do(func() error {
				if inside.Add(1) != 1 {
					t.Error("two syncs at once")
				}
				startedSyncs.Add(1)
				time.Sleep(2 * time.Millisecond)
				syncs.Add(1)
				inside.Add(-1)
				return nil
			}); err != nil {
				t.Error(err)
			}
			if syncs.Load() <= before {
				t.Errorf("caller %d returned before a sync that started after it", i)
			}
		}()
	}
	wg.Wait()
	if n := syncs.Load(); n >= callers {
		t.Errorf("%d syncs for %d concurrent callers: not shared", n, callers)
	}
	t.Logf("%d syncs for %d callers", syncs.Load(), callers)
	// An error reaches the callers of that sync.
	boom := errors.New("boom")
	if err := g.do(func() error { return boom }); !errors.Is(err, boom) {
		t.Errorf("err %v", err)
	}
}

func TestParseEntryID(t *testing.T) {
	now := time.Date(2024, 5, 6, 7, 8, 9, 123, time.UTC)
	for _, j := range []Job{{TargetID: 0}, {TargetID: 42, Force: true}, {TargetID: 1 << 30}} {
		st, target, force, ok := parseEntryID(newEntryID(now, j))
		if !ok || !st.Equal(now) || target != j.TargetID || force != j.Force {
			t.Errorf("%+v: %v %d %v %v", j, st, target, force, ok)
		}
	}
	for _, bad := range []string{"", "x", "a-b-c", "20240506T070809.000000123-tx-00", "20240506T070809.000000123-t-1-00", "20240506T070809.000000123-42-00"} {
		if _, _, _, ok := parseEntryID(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// FuzzSpoolHeader: a damaged spool file never panics the agent, and a
// header that decodes is one the spool could have written.
func FuzzSpoolHeader(f *testing.F) {
	dir := f.TempDir()
	sp, err := openSpool(dir, testArch, false)
	if err != nil {
		f.Fatal(err)
	}
	for i, j := range []Job{{TargetID: 1}, {TargetID: 2, Force: true, URL: "https://x/\"\n", Repo: "r"}} {
		e := &spoolEntry{ID: fmt.Sprintf("seed%d", i), Job: j, Arch: testArch, Start: 1}
		fl, err := sp.create(e)
		if err != nil {
			f.Fatal(err)
		}
		_, _ = io.WriteString(fl, "log\n")
		e.State, e.Size, e.ExitCode = stateFinished, 4, 1
		if err := sp.update(fl, e); err != nil {
			f.Fatal(err)
		}
		fl.Close()
		b, err := os.ReadFile(sp.logPath(e))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:preambleSize+100])
	}
	f.Add([]byte(spoolMagic + "00000512      \n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeHeader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if e.slot < 512 || e.slot%512 != 0 || e.bodyOffset() > int64(len(b)) {
			t.Errorf("accepted header size %d for %d bytes", e.slot, len(b))
		}
	})
}

// TestRejectedPruned: logs/rejected keeps recent files up to a total size.
func TestRejectedPruned(t *testing.T) {
	sp, err := openSpool(t.TempDir(), testArch, false)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	write := func(name string, size int, age time.Duration) {
		p := filepath.Join(sp.rejected, name)
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	write("old.log", 10, rejectedMaxAge+time.Hour)
	write("big-older.log", rejectedMaxBytes/2+1, 2*time.Hour)
	write("big-newer.log", rejectedMaxBytes/2, time.Hour)
	write("small-newest.log", 100, time.Minute)
	if err := os.Mkdir(filepath.Join(sp.rejected, "a-dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := sp.pruneRejected(now); err != nil {
		t.Fatal(err)
	}
	var left []string
	des, _ := os.ReadDir(sp.rejected)
	for _, de := range des {
		left = append(left, de.Name())
	}
	if strings.Join(left, " ") != "a-dir big-newer.log small-newest.log" {
		t.Errorf("left %v, want the dir, big-newer and small-newest", left)
	}
}
