//go:build !linux || !cgo || !seccomp

package sandbox

// SeccompSupported tells whether this binary can install seccomp filters
// (built with cgo and the "seccomp" tag, libseccomp linked in).
const SeccompSupported = false
