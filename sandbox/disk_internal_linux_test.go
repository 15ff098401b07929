package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTreeUsage checks what a measurement of a tree counts: allocated
// blocks, each entry at least one block (empty files cannot exhaust the
// inodes for free), hard links once, symbolic links as themselves (never
// their targets), nothing across a bound; and that it stops past its bound
// and at maxDiskDepth.
func TestTreeUsage(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	data := make([]byte, 1<<20) // 1 MiB of non-zero bytes: no holes
	for i := range data {
		data[i] = 'x'
	}
	write := func(p string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	usage := func(max int64) (int64, error) {
		t.Helper()
		return treeUsage(root, max)
	}
	base, err := usage(1 << 40)
	if err != nil {
		t.Fatal(err)
	}
	if base != diskEntryCharge {
		t.Errorf("empty tree: %d bytes, want one entry's charge %d", base, diskEntryCharge)
	}

	write(filepath.Join(root, "a", "big"), data)
	write(filepath.Join(outside, "huge"), append(data, data...))
	if err := os.Symlink(filepath.Join(outside, "huge"), filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "a", "big"), filepath.Join(root, "hardlink")); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		write(filepath.Join(root, "empty", strings.Repeat("e", i+1)), nil)
	}
	got, err := usage(1 << 40)
	if err != nil {
		t.Fatal(err)
	}
	// root, a/, big (1 MiB, once), link, empty/ and its 100 files.
	want := int64(1<<20) + (1+1+1+1+100)*diskEntryCharge
	if got < want || got > want+64<<10 {
		t.Errorf("tree: %d bytes, want about %d (1 MiB once, 104 entries at %d)", got, want, diskEntryCharge)
	}

	// Past the bound: stopped, with what it measured so far.
	if n, err := usage(want / 2); !errors.Is(err, errOverLimit) || n <= want/2 {
		t.Errorf("bound %d: %d, %v; want errOverLimit past the bound", want/2, n, err)
	}

	// A sparse file counts what it allocates, not its size (RLIMIT_FSIZE
	// bounds its size in a run).
	f, err := os.Create(filepath.Join(root, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 40); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if n, err := usage(1 << 41); err != nil || n > want+2*diskEntryCharge+64<<10 {
		t.Errorf("with a 1 TiB sparse file: %d, %v; want its blocks only", n, err)
	}

	// Too deep to measure: an error, never a small number.
	deep := filepath.Join(root, "deep")
	if err := os.Mkdir(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(deep, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range maxDiskDepth + 1 {
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		fd = next
	}
	unix.Close(fd)
	if _, err := usage(1 << 41); !errors.Is(err, errTooDeep) {
		t.Errorf("a tree %d levels deep: %v, want errTooDeep", maxDiskDepth+2, err)
	}
}

// TestDiskWatchBase: a watch counts what was added beyond the base of each
// tree, and finish finds a tree over the limit after the fact.
func TestDiskWatchBase(t *testing.T) {
	upper, cache := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(cache, "old"), make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := newDiskWatch(2<<20, []string{upper, cache})
	if err != nil {
		t.Fatal(err)
	}
	if over, used, _ := w.finish(); over || used != 0 {
		t.Errorf("nothing added: over %v, used %d; want within, 0 (the 4 MiB already in the cache are not the run's)", over, used)
	}
	w, err = newDiskWatch(2<<20, []string{upper, cache})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(upper, "new"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "new"), make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	over, used, reason := w.finish()
	if !over || used <= 2<<20 || !strings.Contains(reason, "limit 2097152") {
		t.Errorf("3 MiB added with a 2 MiB limit: over %v, used %d, reason %q", over, used, reason)
	}
}
