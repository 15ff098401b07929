package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRotatingFile: past its size the log file becomes FILE.1 and a new
// one starts; lines are whole in each; a reopened file keeps its size.
func TestRotatingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vagent.log")
	r, err := openRotatingFile(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if _, err := fmt.Fprintf(r, "line %02d 123456789\n", i); err != nil { // 18 bytes
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	cur, _ := os.ReadFile(path)
	old, _ := os.ReadFile(path + ".1")
	if len(cur) > 100 || len(old) > 100 || len(old) == 0 {
		t.Errorf("sizes %d and %d, want each ≤ 100 and a rotated file", len(cur), len(old))
	}
	if !strings.HasSuffix(string(cur), "line 11 123456789\n") || !strings.HasPrefix(string(cur), "line ") || !strings.HasPrefix(string(old), "line ") {
		t.Errorf("lines split or lost:\n%s---\n%s", old, cur)
	}
	// Reopened: the size counts, the next lines rotate again in time.
	r, err = openRotatingFile(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for range 6 {
		fmt.Fprintf(r, "more 0123456789ab\n")
	}
	if fi, _ := os.Stat(path); fi.Size() > 100 {
		t.Errorf("reopened file grew to %d", fi.Size())
	}
	if fi, _ := os.Stat(path + ".1"); fi.Mode().Perm() != 0o600 {
		t.Errorf("rotated file mode %v", fi.Mode().Perm())
	}
}
