package main

import (
	"fmt"
	"os"
	"path/filepath"
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

// docLines returns the vagent command lines in the code blocks of a
// Markdown text (as docCommands finds them), as words after "vagent",
// without a trailing comment.
func docLines(md string) [][]string {
	var out [][]string
	fence := ""
	for _, line := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(line)
		if fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")) {
			fence = trimmed[:3]
			continue
		}
		if fence != "" && strings.HasPrefix(trimmed, fence) {
			fence = ""
			continue
		}
		indented := strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t")
		if fence == "" && !indented {
			continue
		}
		if i := strings.Index(trimmed, " #"); i >= 0 {
			trimmed = trimmed[:i]
		}
		words := strings.Fields(strings.TrimPrefix(trimmed, "$ "))
		for len(words) > 0 && (words[0] == "sudo" || envAssign.MatchString(words[0])) {
			words = words[1:]
		}
		if len(words) < 2 || words[0] != "vagent" || strings.HasSuffix(words[1], ":") {
			continue // not a command line (an error message: "vagent run: …")
		}
		// The command's own words end at the shell's.
		for i, w := range words {
			if w == "|" || w == "&&" || w == ";" || w == ">" || w == "\\" {
				words = words[:i]
				break
			}
		}
		out = append(out, words[1:])
	}
	return out
}

// TestDocsCommandLines: every flag of a vagent command line in README.md
// and docs/*.md is a flag of that command, written as the help writes it
// (--name, not the Go-style -name that is still accepted); and every exit
// status the prose names ("exit 1", "exit status 78", "exits 2") is one of
// docs/cli.md's table.
func TestDocsCommandLines(t *testing.T) {
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{"../../README.md"}, docs...)
	codes := map[string]bool{}
	for _, s := range exitStatuses {
		for _, c := range strings.Split(s.code, ", ") {
			codes[c] = true
		}
	}
	exitRE := regexp.MustCompile(`(?i)\bexit(?:s| status| statuses)?(?: with)? (\d+)\b`)
	root := helpTree()
	lines := 0
	for _, f := range docs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(f, "../../")
		for _, words := range docLines(string(b)) {
			c, rest, err := root.Find(words)
			if err != nil || c == root {
				continue // TestDocsCommandsCovered reports unknown commands
			}
			lines++
			for _, w := range rest {
				tok := strings.Trim(w, "[]()…,`'\"")
				if i := strings.IndexByte(tok, '='); i >= 0 {
					tok = tok[:i]
				}
				switch {
				case strings.HasPrefix(tok, "--") && len(tok) > 2:
					if c.Flags().Lookup(tok[2:]) == nil && c.InheritedFlags().Lookup(tok[2:]) == nil {
						t.Errorf("%s: `vagent %s`: %s is no flag of %s", name, strings.Join(words, " "), tok, c.CommandPath())
					}
				case strings.HasPrefix(tok, "-") && len(tok) == 2 && tok != "--":
					if c.Flags().ShorthandLookup(tok[1:]) == nil && c.InheritedFlags().ShorthandLookup(tok[1:]) == nil {
						t.Errorf("%s: `vagent %s`: %s is no flag of %s", name, strings.Join(words, " "), tok, c.CommandPath())
					}
				case strings.HasPrefix(tok, "-") && len(tok) > 2 && !strings.HasPrefix(tok, "--"):
					t.Errorf("%s: `vagent %s`: write --%s (the Go-style %s is only accepted)", name, strings.Join(words, " "), tok[1:], tok)
				}
			}
		}
		for _, m := range exitRE.FindAllStringSubmatch(string(b), -1) {
			if !codes[m[1]] {
				t.Errorf("%s: %q: no such exit status in docs/cli.md's table", name, m[0])
			}
		}
	}
	if lines < 20 {
		t.Errorf("found %d command lines in the documentation: the parser broke", lines)
	}
}
