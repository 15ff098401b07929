package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// helpTree is vagent's command tree as `vagent help` shows it, help and
// completion included.
func helpTree() *cobra.Command {
	root := testRoot()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

// cliRows are the rows of docs/cli.md's command table: "| `vagent
// PATH` | SHORT |" for every command and subcommand.
func cliRows(root *cobra.Command) []string {
	var rows []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			if s.Hidden || (c != root && s.Name() == "help") {
				continue
			}
			rows = append(rows, fmt.Sprintf("| `%s` | %s |", s.CommandPath(), s.Short))
			if c == root && s.Name() != "completion" {
				walk(s)
			}
		}
	}
	walk(root)
	return rows
}

// tableRows returns the lines of md that are rows of a table whose first
// cell is code starting with prefix.
func tableRows(md, prefix string) []string {
	var rows []string
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| `"+prefix) {
			rows = append(rows, line)
		}
	}
	return rows
}

// TestCLIDocs: docs/cli.md lists every command and subcommand with the
// summary `vagent help` shows, and the exit statuses of exitStatuses;
// README.md's command table lists the top-level commands. Either fails
// when the documentation and the command tree diverge.
func TestCLIDocs(t *testing.T) {
	root := helpTree()
	cli, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tableRows(string(cli), "vagent "), cliRows(root); !slices.Equal(got, want) {
		t.Errorf("docs/cli.md's command table differs from `vagent help`; want:\n%s\ngot:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
	var want []string
	for _, s := range exitStatuses {
		want = append(want, fmt.Sprintf("| %s | %s |", s.code, s.meaning))
	}
	var got []string
	for _, line := range strings.Split(string(cli), "\n") {
		if regexp.MustCompile(`^\| (\d|other)`).MatchString(line) {
			got = append(got, line)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("docs/cli.md's exit statuses differ from exitStatuses; want:\n%s\ngot:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var top []string
	for _, c := range root.Commands() {
		top = append(top, c.Name())
	}
	var listed []string
	for _, row := range tableRows(string(readme), "vagent ") {
		name := strings.Fields(strings.TrimPrefix(row, "| `vagent "))[0]
		listed = append(listed, strings.TrimSuffix(name, "`"))
	}
	slices.Sort(listed)
	if !slices.Equal(top, listed) {
		t.Errorf("README.md's command table lists %v; `vagent help` has %v", listed, top)
	}
}
