// Package testkit holds the helpers that vagent's tests, benchmarks and
// `make demo` share: a throw-away local OCI registry (Debian's
// docker-registry), a tiny single-layer busybox image, and a cached
// multi-layer "Arch-like" builder image made from Debian with debootstrap,
// pacman and makepkg.
//
// It lives in internal/ rather than under testdata/ on purpose: the go tool
// skips directories named testdata in `./...` patterns, so code there is
// never built, vetted or tested by `go test ./...` and cannot be imported.
// A helper package that other packages' tests import needs a real package
// path; internal/ keeps it private to this module. The testdata/ directory
// holds only inert material (recipes, fixtures).
//
// Policy for missing prerequisites: a helper that needs an external tool or
// root privileges skips the calling test with a clear message when the
// prerequisite is missing, except in CI (environment CI=true), where a
// missing prerequisite fails the test instead: CI must run everything.
package testkit
