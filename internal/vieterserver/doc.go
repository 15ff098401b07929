// Package vieterserver is a Vieter-compatible test server: an http.Handler
// that follows the contract in docs (the Vieter 0.6.0 API as an agent sees
// it): API-key authentication, the per-architecture job queue with pop
// semantics, build-log upload with its validations, package publishing and
// a Pacman repository (databases, packages and the version check).
//
// It lives in internal/ because it is test infrastructure shared by several
// packages (poll, the build tests) and by `make demo`; it is not part of the
// agent and offers no compatibility promise. It adds what a real server does
// not have: Go accessors for assertions, request counters per route, hooks,
// and deterministic fault injection (5xx answers, dropped connections,
// malformed JSON, latency).
//
// State is kept in memory. With WithDataDir the logs and the repository
// files are also written to a directory so that a person (or the demo) can
// look at them.
package vieterserver
