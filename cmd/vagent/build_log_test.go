package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/vieter-v/vagent/job"
)

// TestBuildLog: the log tees the build's output into a temporary in the
// output directory (created when missing), named at the end as devtools
// names it, or vagent-build.log when the package is not known; the
// temporary is gone either way.
func TestBuildLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		info *job.SrcInfo
		want string
	}{
		{"named", &job.SrcInfo{Base: "hello", Version: "1.0", Release: "2", Epoch: "1"}, "hello-1:1.0-2-x86_64-build.log"},
		{"unknown", nil, "vagent-build.log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "new", "out")
			var out bytes.Buffer
			l, err := createBuildLog(&out, dir, -1, -1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Write([]byte("line 1\nline 2\n")); err != nil {
				t.Fatal(err)
			}
			p, err := l.finish(tc.info, "x86_64")
			if err != nil {
				t.Fatal(err)
			}
			if p != filepath.Join(dir, tc.want) {
				t.Errorf("log %s, want %s", p, filepath.Join(dir, tc.want))
			}
			data, err := os.ReadFile(p)
			if err != nil || string(data) != "line 1\nline 2\n" || out.String() != string(data) {
				t.Errorf("log %q (%v), output %q", data, err, out.String())
			}
			if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
				t.Errorf("mode %v, want 0644", fi.Mode())
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Errorf("the output directory holds %d entries, want the log only", len(ents))
			}
		})
	}
}
