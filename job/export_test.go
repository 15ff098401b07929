package job

import "path/filepath"

// WithUpperHook makes the Runner call f with the upper directory of every
// finished run, before it is removed.
func WithUpperHook(f func(dir string)) Option {
	return func(o *options) error {
		o.upperHook = f
		return nil
	}
}

// CacheDir returns the directory of the shared package cache that builds
// see on /var/cache/pacman/pkg.
func CacheDir(b *Runner) string { return filepath.Join(b.cacheDir(), cacheTree) }
