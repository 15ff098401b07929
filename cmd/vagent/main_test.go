package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets testscript run the test binary as the `vagent` command.
// The libcontainer init re-exec is handled earlier, in an init function.
func TestMain(m *testing.M) {
	testscript.Main(closingM{m}, map[string]func(){
		"vagent": func() { os.Exit(run1(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// closingM runs the tests, then stops what they shared.
type closingM struct{ m *testing.M }

func (c closingM) Run() int {
	code := c.m.Run()
	localBuild.e.close()
	return code
}

// TestScripts runs the CLI end to end from testdata/script/*.txtar.
// Conditions and extra commands are in script_cmds_test.go.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:       "testdata/script",
		Condition: scriptCondition,
		Cmds:      scriptCmds,
	})
}

// agentEnv names the vagent binary that the end-to-end tests start as a
// process (`vagent run`, an ordinary user's vagent): `make unit` sets it to
// the binary `make build` makes, the one users install. Unset, they start
// the test binary, which is vagent when called so: the same code, built
// with the race detector, which makes its image unpacking and hashing
// several times slower (docs/testing.md, "Where the time goes").
const agentEnv = "VAGENT_TEST_AGENT"

// agentBinary is the vagent the end-to-end tests start (see agentEnv).
func agentBinary(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv(agentEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			tb.Fatalf("%s: %v", agentEnv, err)
		}
		return bin
	}
	bin, err := exec.LookPath("vagent") // the test binary, installed by testscript.Main
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

// agentVersion is the version agentBinary reports (`vagent version`'s
// first line), which its build logs carry.
func agentVersion(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command(agentBinary(tb), "version").Output()
	if err != nil {
		tb.Fatalf("vagent version: %v", err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	v, ok := strings.CutPrefix(first, "vagent ")
	if !ok {
		tb.Fatalf("vagent version: %q", out)
	}
	return v
}
