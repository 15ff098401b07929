package job

import (
	"path/filepath"
	"time"
)

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

// WithSrcInfoWithin replaces SrcInfoWithin, the time the length line and
// the .SRCINFO have to arrive once the first byte did.
func WithSrcInfoWithin(d time.Duration) Option {
	return func(o *options) error {
		o.srcInfoWithin = d
		return nil
	}
}
