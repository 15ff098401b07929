package job

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vieter-v/vagent/sandbox"
)

// packageTree makes a PKGDEST below a new upper directory holding files
// (name → content) and sparse files (name → size, 4 bytes of data at the
// end) and returns the upper.
func packageTree(t *testing.T, files map[string]string, sparse map[string]int64) string {
	t.Helper()
	upper := t.TempDir()
	out := filepath.Join(upper, outDir)
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(out, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, size := range sparse {
		f, err := os.Create(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("data"), size-4); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return upper
}

// TestPackageChecks: a build's packages are refused whole, before any is
// copied, for a name outside Arch's character set or too long, or a
// sparse file; a valid set is copied out byte for byte, atomically (no
// temporary left), owned as asked.
func TestPackageChecks(t *testing.T) {
	good := map[string]string{"a-1-1-any.pkg.tar.zst": "package a", "b-1:2.0-1-x86_64.pkg.tar.zst": "package b", "a-1-1-any.pkg.tar.zst.sig": "sig", "notes.txt": "x"}
	for _, tc := range []struct {
		name   string
		files  map[string]string
		sparse map[string]int64
		want   string // in the error; "" for success
	}{
		{"valid", good, nil, ""},
		{"direction mark", map[string]string{"a-1-1-any.pkg.tar.zst": "a", "evil\u202egpj-1-1-any.pkg.tar.zst": "x"}, nil, `evil\u202egpj`},
		{"invalid UTF-8", map[string]string{"a-1-1-any.pkg.tar.zst": "a", "x\xff-1-1-any.pkg.tar.zst": "x"}, nil, `x\xff`},
		{"space", map[string]string{"a-1-1-any.pkg.tar.zst": "a", "x y-1-1-any.pkg.tar.zst": "x"}, nil, "x y"},
		{"too long", map[string]string{"a-1-1-any.pkg.tar.zst": "a", strings.Repeat("l", 200) + "-1-1-any.pkg.tar.zst": "x"}, nil, "more than 200"},
		{"sparse", map[string]string{"a-1-1-any.pkg.tar.zst": "a"}, map[string]int64{"z-1-1-any.pkg.tar.zst": 1 << 30}, "z-1-1-any.pkg.tar.zst is a sparse file (1073741824 bytes, a hole at byte 0)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			o := defaultOptions()
			o.outDir, o.outUID, o.outGID = out, os.Getuid()+1, os.Getgid()+1
			if os.Geteuid() != 0 {
				o.outUID, o.outGID = -1, -1
			}
			b := &Runner{opts: o}
			var log bytes.Buffer
			upper := packageTree(t, tc.files, tc.sparse)
			names, err := b.publish(t.Context(), sandboxUpper(upper), "repo", &log)
			ents, _ := os.ReadDir(out)
			if tc.want != "" {
				if !errors.Is(err, ErrBadPackage) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("deliver: %v, want ErrBadPackage naming %q", err, tc.want)
				}
				if len(ents) > 0 || len(names) > 0 {
					t.Errorf("copied %v (%v) before refusing the build", ents, names)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(names, " ") != "a-1-1-any.pkg.tar.zst b-1:2.0-1-x86_64.pkg.tar.zst" || len(ents) != 2 {
				t.Fatalf("delivered %v, output holds %v", names, ents)
			}
			for _, n := range names {
				data, err := os.ReadFile(filepath.Join(out, n))
				if err != nil || string(data) != good[n] {
					t.Errorf("%s: %q, %v", n, data, err)
				}
				fi, _ := os.Stat(filepath.Join(out, n))
				if fi.Mode().Perm() != 0o644 {
					t.Errorf("%s: mode %v", n, fi.Mode())
				}
				if o.outUID >= 0 {
					if uid, _ := ownerOf(fi); uid != o.outUID {
						t.Errorf("%s owned by %d, want %d", n, uid, o.outUID)
					}
				}
			}
		})
	}
}

func sandboxUpper(dir string) *sandbox.Upper { return sandbox.NewUpper(dir, 0, 0, nil) }

func ownerOf(fi os.FileInfo) (int, int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}
