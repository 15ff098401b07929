package main

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// readsAsUser are the commands with a data dir that an ordinary user runs
// as started, outside the user namespace: they only read what is the
// user's (the log spool).
var readsAsUser = map[string]bool{"status": true, "logs": true}

// TestEveryDataDirCommandRootless: every command that works on a data dir
// either enters the user namespace for an ordinary user (inUserNamespace)
// or only reads what is the user's (readsAsUser): a command added later
// cannot unpack, build or chown as the plain user by omission.
func TestEveryDataDirCommandRootless(t *testing.T) {
	root := newRootCmd(&cliEnv{stdin: os.Stdin, stdout: io.Discard, stderr: io.Discard, log: logrus.New()})
	seen := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Flags().Lookup("data-dir") == nil && c.Flags().Lookup("config") == nil {
			return
		}
		name := cmdName(c)
		seen++
		if inUserNamespace[name] == readsAsUser[name] {
			t.Errorf("%q has --data-dir or --config: it must be in exactly one of inUserNamespace and readsAsUser", name)
		}
	}
	walk(root)
	for name := range inUserNamespace {
		if c, _, err := root.Find(strings.Fields(name)); err != nil || cmdName(c) != name {
			t.Errorf("inUserNamespace names %q, which is no command", name)
		}
	}
	if seen < len(inUserNamespace) {
		t.Errorf("found %d commands with a data dir, fewer than inUserNamespace's %d", seen, len(inUserNamespace))
	}
}
