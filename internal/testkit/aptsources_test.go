package testkit

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDebianMirror(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
		err   error
	}{
		{
			name: "one-line with options and comments",
			files: map[string]string{"sources.list": `# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main # tail
deb http://sec.example/debian-security bookworm-security main
`},
			want: "http://one.example/debian",
		},
		{
			name: "deb822 skips disabled, other suites and non-deb",
			files: map[string]string{"sources.list.d/debian.sources": `Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Enabled: no

Types: deb
# a comment inside
URIs: http://sec.example/debian-security
Suites: bookworm-security

Types: deb deb-src
URIs: mirror+file:/etc/apt/mirrors.txt
 http://deb822.example/debian
Suites: bookworm bookworm-updates
Components: main
`},
			want: "http://deb822.example/debian",
		},
		{
			name: "sources.list comes first, ignored file names",
			files: map[string]string{
				"sources.list":                   "deb http://first.example/debian bookworm main\n",
				"sources.list.d/a.sources":       "Types: deb\nURIs: http://second.example/debian\nSuites: bookworm\n",
				"sources.list.d/0.list.disabled": "deb http://disabled.example/debian bookworm main\n",
			},
			want: "http://first.example/debian",
		},
		{
			name:  "only disabled file names",
			files: map[string]string{"sources.list.d/x.sources.disabled-by-farm": "Types: deb\nURIs: http://x.example/d\nSuites: bookworm\n"},
			err:   ErrNoMirror,
		},
		{name: "nothing configured", err: ErrNoMirror},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for name, body := range tt.files {
				p := filepath.Join(root, "etc/apt", name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := DebianMirror(root, "bookworm")
			if !errors.Is(err, tt.err) {
				t.Fatalf("DebianMirror error = %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("DebianMirror = %q, want %q", got, tt.want)
			}
		})
	}
}
