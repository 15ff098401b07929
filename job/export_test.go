package job

import (
	"path/filepath"
	"time"

	"github.com/vieter-v/vagent/poll"
)

// WithUpperHook makes the Runner call f with the upper directory of every
// finished run, before it is removed.
func WithUpperHook(f func(dir string)) Option {
	return func(o *options) error {
		o.upperHook = f
		return nil
	}
}

// CacheTree returns the package cache that builds of j's target see on
// /var/cache/pacman/pkg.
func CacheTree(b *Runner, j poll.Job) string {
	return filepath.Join(b.cacheDir(), targetsDir, cacheKey(j), cacheTree)
}

// WithSrcInfoWithin replaces SrcInfoWithin, the time the length line and
// the .SRCINFO have to arrive once the first byte did.
func WithSrcInfoWithin(d time.Duration) Option {
	return func(o *options) error {
		o.srcInfoWithin = d
		return nil
	}
}

// WithTwoPasses makes every build run makepkg --nobuild first, as builds
// did before PKGBUILDs without pkgver() ran makepkg once: the "before" of
// the benchmarks' comparison.
func WithTwoPasses() Option {
	return func(o *options) error {
		o.twoPasses = true
		return nil
	}
}
