package build

// WithUpperHook makes the Builder call f with the upper directory of every
// finished run, before it is removed.
func WithUpperHook(f func(dir string)) Option {
	return func(o *options) error {
		o.upperHook = f
		return nil
	}
}

// CacheDir returns the shared package cache of b.
func CacheDir(b *Builder) string { return b.cacheDir() }
