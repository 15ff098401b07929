package sandbox

// WithResolvConf makes isolated runs take their resolver configuration,
// and the name servers they reach, from path instead of /etc/resolv.conf.
func WithResolvConf(path string) Option {
	return func(o *options) error { o.resolvConf = path; return nil }
}

// WaitReaped waits until the pasta processes of ended runs have exited (as
// Close does).
func (m *Manager) WaitReaped() { m.reapers.Wait() }
