package sandbox

// WithResolvConf makes isolated runs take their resolver configuration,
// and the name servers they reach, from path instead of /etc/resolv.conf.
func WithResolvConf(path string) Option {
	return func(o *options) error { o.resolvConf = path; return nil }
}
