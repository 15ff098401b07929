package build

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRunCache checks where a build's package cache comes from: the shared
// directory by default or as configured, a private one removed after the
// build when the shared cache is off.
func TestRunCache(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []Option
		shared func(dir string) string // "" for a private cache
	}{
		{"default", nil, func(dir string) string { return filepath.Join(dir, "pacman-cache") }},
		{"configured", []Option{WithCacheDir("/CACHE")}, nil},
		{"off", []Option{WithCacheDir("")}, func(string) string { return "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := defaultOptions()
			for _, opt := range tc.opts {
				if err := opt(o); err != nil {
					t.Fatal(err)
				}
			}
			want := ""
			if tc.shared != nil {
				want = tc.shared(dir)
			} else {
				want = filepath.Join(dir, "shared-cache")
				o.cacheDir = want
			}
			b := &Builder{opts: o, dir: dir}
			if err := b.prepareDir(); err != nil {
				t.Fatal(err)
			}
			got, drop, err := b.runCache()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(got, ".vagent.lock")); err != nil {
				t.Errorf("cache %s has no lock file: %v", got, err)
			}
			if want != "" {
				if got != want {
					t.Errorf("cache = %s, want the shared %s", got, want)
				}
				drop()
				if _, err := os.Stat(got); err != nil {
					t.Errorf("shared cache removed after the build: %v", err)
				}
				return
			}
			if filepath.Dir(got) != b.runsDir() {
				t.Errorf("private cache %s is not under %s", got, b.runsDir())
			}
			drop()
			if _, err := os.Stat(got); !os.IsNotExist(err) {
				t.Errorf("private cache %s still there after the build: %v", got, err)
			}
		})
	}
	if err := WithCacheDir("relative/dir")(defaultOptions()); err == nil {
		t.Error("WithCacheDir accepted a relative path")
	}
}
