package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI (environment CI=true), where a
// missing prerequisite is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips tb with the message, or fails it when InCI.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("%s (CI=true: prerequisites are mandatory)", msg)
	}
	tb.Skip(msg)
}

// RequireTool returns the path of the program name, or skips tb (fails it
// in CI) when the program is not installed. pkg names the Debian package
// that provides it, for the message.
func RequireTool(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(tb, "%s not found: install Debian package %s (make deps)", name, pkg)
	}
	return p
}

// RequireRoot skips tb (fails it in CI) unless the process runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Unavailable(tb, "needs root (uid %d)", os.Geteuid())
	}
}
