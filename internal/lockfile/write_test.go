package lockfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestWrite publishes the content with its mode, and leaves the old
// content and no temporary when the writer fails.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "f")
	if err := WriteFile(dst, []byte("one"), WriteOptions{TmpDir: tmp, Perm: 0o444, Sync: true}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("Stat = %v, %v; want mode 0444", fi, err)
	}
	boom := errors.New("boom")
	err = Write(dst, WriteOptions{TmpDir: tmp}, func(w *os.File) error {
		// While it is written, the temporary is not stale.
		if n, err := RemoveStale(tmp); n != 0 || err != nil {
			t.Errorf("RemoveStale during a write = %d, %v", n, err)
		}
		w.WriteString("two")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write = %v, want %v", err, boom)
	}
	if b, _ := os.ReadFile(dst); string(b) != "one" {
		t.Errorf("content after a failed write = %q, want the old one", b)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("temporaries left: %v", ents)
	}
	if err := WriteFile(dst, []byte("two"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "two" {
		t.Errorf("content = %q, want two", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("entries beside the file: %v", ents)
	}
}
