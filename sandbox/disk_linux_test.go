package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// ownFS mounts a tmpfs of size bytes on a new directory and returns it: a
// file system no other process writes to, whose free space tells what the
// runs on it took.
func ownFS(t *testing.T, size int64) string {
	t.Helper()
	dir := sandboxtest.Dir(t)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("mode=0711,size=%d", size)); err != nil {
		t.Fatalf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

func usedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		t.Fatal(err)
	}
	return int64(s.Blocks-s.Bfree) * s.Bsize
}

// peakUsage samples the used bytes of dir's file system until stop is
// closed and returns the highest it saw.
func peakUsage(t *testing.T, dir string, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak atomic.Int64
		for {
			var s unix.Statfs_t
			if unix.Statfs(dir, &s) == nil {
				if u := int64(s.Blocks-s.Bfree) * s.Bsize; u > peak.Load() {
					peak.Store(u)
				}
			}
			select {
			case <-stop:
				out <- peak.Load()
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return out
}

// TestDiskLimit runs writers against Limits.Disk on a file system of the
// test's own, and looks at the host side: how much of that file system the
// run took at its peak, not only how the run ended.
func TestDiskLimit(t *testing.T) {
	const mib = 1 << 20
	const limit = 128 * mib
	rootfs := sandboxtest.BusyboxRootfs(t)
	data := ownFS(t, 1024*mib)
	e := newManagerIn(t, filepath.Join(data, "sandbox"))
	uid, gid, _ := e.m.IDRange()
	shared := filepath.Join(data, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(shared, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	// Earlier content of a writable mount, beyond the limit: not the run's.
	if err := os.WriteFile(filepath.Join(shared, "old"), make([]byte, limit+16*mib), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		script string
		over   bool
	}{
		// 16 files of 16 MiB, twice the limit, then a wait that only the
		// watcher can end.
		{"many files", `i=0; while [ $i -lt 16 ]; do dd if=/dev/zero of=/f$i bs=1M count=16 2>/dev/null; i=$((i+1)); done; echo written; sleep 600`, true},
		// One file twice the limit: the kernel stops it at the limit.
		{"one file", `dd if=/dev/zero of=/big bs=1M count=256 2>&1 | tail -1; echo "size $(stat -c %s /big)"`, true},
		// A sparse file larger than the limit cannot be made either (it
		// would allocate nothing, but a package made of it would copy
		// out whole).
		{"sparse file", `dd if=/dev/zero of=/sparse bs=1 count=1 seek=1073741824 2>&1 | tail -1; truncate -s 1G /sparse; echo "size $(stat -c %s /sparse)"; echo done`, false},
		// Into the writable mount: counted too.
		{"writable mount", `i=0; while [ $i -lt 16 ]; do dd if=/dev/zero of=/shared/f$i bs=1M count=16 2>/dev/null; i=$((i+1)); done; sleep 600`, true},
		{"within", `dd if=/dev/zero of=/half bs=1M count=64 2>/dev/null && dd if=/dev/zero of=/shared/half bs=1M count=32 2>/dev/null && echo done`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := usedBytes(t, data)
			stop := make(chan struct{})
			peak := peakUsage(t, data, stop)
			var out sandboxtest.Buffer
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			start := time.Now()
			res, err := e.m.Run(ctx, sandbox.Spec{
				Lower: rootfs, Args: []string{"/bin/sh", "-c", tc.script}, Env: pathEnv, Output: &out,
				Mounts:    []sandbox.Mount{{Source: shared, Target: "/shared"}},
				Limits:    &sandbox.Limits{Disk: limit},
				KeepUpper: true,
			})
			took := time.Since(start)
			close(stop)
			grew := <-peak - before
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("exit %d, disk exceeded %v, usage %d MiB, peak growth of the file system %d MiB, %s; output %q",
				res.ExitCode, res.DiskExceeded, res.DiskUsage/mib, grew/mib, took.Round(time.Millisecond), out.String())
			if res.TimedOut || res.Cancelled {
				t.Fatalf("the run was not stopped by its disk limit: %+v", res)
			}
			if res.DiskExceeded != tc.over {
				t.Errorf("DiskExceeded = %v, want %v", res.DiskExceeded, tc.over)
			}
			// The host's file system never held much more than the limit
			// for this run: the overshoot is what a writer manages in a
			// tick and one measurement (see disk_linux.go).
			if grew > limit+limit/2 {
				t.Errorf("the file system grew by %d MiB during the run, limit %d MiB", grew/mib, limit/mib)
			}
			if tc.over && strings.Contains(tc.script, "sleep 600") && res.ExitCode != 128+9 {
				t.Errorf("exit %d, want 137 (SIGKILL)", res.ExitCode)
			}
			if !tc.over && (res.ExitCode != 0 || !strings.Contains(out.String(), "done")) {
				t.Errorf("a run within its limit failed: exit %d", res.ExitCode)
			}
			// No file of the run is larger than the limit (RLIMIT_FSIZE),
			// whether the kernel stopped the writer or the watcher the run.
			if res.Upper != nil {
				for _, name := range []string{"big", "sparse"} {
					if fi, err := os.Lstat(filepath.Join(res.Upper.Path, name)); err == nil && fi.Size() > limit {
						t.Errorf("/%s has %d bytes, more than the limit %d", name, fi.Size(), int64(limit))
					}
				}
				if err := res.Upper.Release(); err != nil {
					t.Error(err)
				}
			}
			// What the run wrote into the writable mount stays there: clean up.
			ents, _ := os.ReadDir(shared)
			for _, en := range ents {
				if en.Name() != "old" {
					os.Remove(filepath.Join(shared, en.Name()))
				}
			}
		})
	}
}
