// Package layering holds one test: the import rules between vagent's
// packages (docs/architecture.md, "Packages"). The rules span every
// package, so they belong to none of them; like go-containerregistry's
// depcheck, the test reads `go list` and fails the build when a rule is
// broken. It has no code of its own.
package layering
