package main

import (
	"os"
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
