package vieterserver

import (
	"strings"
	"testing"
)

// FuzzReadPackage feeds untrusted package files to the reader: it must
// never panic, and whatever it accepts must have safe names.
func FuzzReadPackage(f *testing.F) {
	for _, c := range []Compression{Zstd, Gzip, NoCompression} {
		f.Add(mustPackage(f, "seed", "1:1.0-1", "x86_64", c))
	}
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0})
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := readPackage(data)
		if err != nil {
			return
		}
		if strings.ContainsAny(p.info.Name+p.info.Version+p.info.Arch, "/\x00") {
			t.Fatalf("accepted unsafe names %+v", p.info)
		}
		for _, f := range p.files {
			if strings.HasPrefix(f, "/") || strings.HasPrefix(f, "../") {
				t.Fatalf("unsafe file entry %q", f)
			}
		}
		_ = p.desc("x")
	})
}

func FuzzVerCmp(f *testing.F) {
	f.Add("1:1.0-1", "1.0a-2")
	f.Add("..", "1..")
	f.Fuzz(func(t *testing.T, a, b string) {
		if x, y := VerCmp(a, b), VerCmp(b, a); x != -y {
			t.Fatalf("VerCmp(%q,%q)=%d but VerCmp(%q,%q)=%d", a, b, x, b, a, y)
		}
	})
}
