package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/txtar"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// testRoot is vagent's command tree, for tests that read it.
func testRoot() *cobra.Command {
	return newRootCmd(&cliEnv{stdout: io.Discard, stderr: io.Discard, log: logrus.New(), getenv: os.Getenv})
}

// nestedCommands are the commands with subcommands of their own.
func nestedCommands() map[string]bool {
	nested := map[string]bool{}
	for _, c := range testRoot().Commands() {
		if c.HasSubCommands() {
			nested[c.Name()] = true
		}
	}
	return nested
}

var envAssign = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=\S*$`)

// commandKey names the command of the words after "vagent": "run",
// "image pull". Alternatives ("pull|ls") give one key each. Nothing for
// words that name no command.
func commandKey(words []string, nested map[string]bool) []string {
	if len(words) == 0 {
		return nil
	}
	first := strings.TrimSuffix(words[0], ":")
	if !regexp.MustCompile(`^[a-z][a-z-]*$`).MatchString(first) {
		return nil
	}
	if !nested[first] || len(words) < 2 {
		return []string{first}
	}
	var keys []string
	for _, sub := range strings.Split(strings.TrimSuffix(words[1], ":"), "|") {
		if !regexp.MustCompile(`^[a-z]+$`).MatchString(sub) {
			return []string{first}
		}
		keys = append(keys, first+" "+sub)
	}
	return keys
}

// docCommands returns the vagent commands shown in the code blocks (fenced
// or indented) of a Markdown text: lines that start with `vagent`, after
// an optional "$ " prompt, "sudo" and VAR=value assignments.
func docCommands(md string, nested map[string]bool) []string {
	var keys []string
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
		words := strings.Fields(strings.TrimPrefix(trimmed, "$ "))
		for len(words) > 0 && (words[0] == "sudo" || envAssign.MatchString(words[0])) {
			words = words[1:]
		}
		if len(words) == 0 || words[0] != "vagent" {
			continue
		}
		keys = append(keys, commandKey(words[1:], nested)...)
	}
	return keys
}

// scriptVagent finds "vagent WORDS" in a script line, also inside sh -c
// '…' and $(…).
var scriptVagent = regexp.MustCompile(`(?:^|[\s'"(;|&])vagent\s+([^\s'")]+)(?:\s+([^\s'")]+))?`)

// scriptCommands returns the vagent commands a testscript script runs:
// those on exec lines (with or without "!" and conditions). A nested
// command run with a subcommand counts for both ("image" and "image pull").
func scriptCommands(script string, nested map[string]bool) []string {
	var keys []string
	for _, line := range strings.Split(script, "\n") {
		words := strings.Fields(line)
		for len(words) > 0 && (words[0] == "!" || strings.HasPrefix(words[0], "[")) {
			words = words[1:]
		}
		if len(words) == 0 || words[0] != "exec" {
			continue
		}
		for _, m := range scriptVagent.FindAllStringSubmatch(strings.Join(words[1:], " "), -1) {
			ws := []string{m[1]}
			if m[2] != "" {
				ws = append(ws, m[2])
			}
			k := commandKey(ws, nested)
			keys = append(keys, k...)
			if len(k) > 0 && strings.Contains(k[0], " ") {
				keys = append(keys, strings.TrimSuffix(ws[0], ":"))
			}
		}
	}
	return keys
}

func TestDocCommandsParsing(t *testing.T) {
	nested := map[string]bool{"image": true}
	md := "Run `vagent run` in prose: not a command.\n" +
		"vagent status at the start of a prose line: not one either.\n\n" +
		"```sh\n$ sudo vagent check   # comment\nVIETER_X=1 vagent image pull REF\nvagent image pull|ls\nvagent image [flags]\n" +
		"kubectl exec ds/vagent -- /vagent version\n```\n\n" +
		"    vagent build [--out DIR] SOURCE\n\n" +
		"1. list\n\n   ```\n   vagent run: agent.yaml:7: error output\n   ```\n"
	want := []string{"check", "image pull", "image pull", "image ls", "image", "build", "run"}
	if diff := cmp.Diff(want, docCommands(md, nested)); diff != "" {
		t.Errorf("docCommands (-want +got):\n%s", diff)
	}
	script := "# vagent version in a comment\nexec vagent image pull --data-dir x REF\n! exec vagent frob\n" +
		"[root] exec sh -c 'vagent check -data-dir \"$WORK\" || true'\nstderr 'usage: vagent build'\n" +
		"exec sh -c 'cat \"$(vagent status --json)\"'\nexec vagent run agent.yaml &vagent&\n"
	want = []string{"image pull", "image", "frob", "check", "status", "run"}
	if diff := cmp.Diff(want, scriptCommands(script, nested)); diff != "" {
		t.Errorf("scriptCommands (-want +got):\n%s", diff)
	}
}

// TestDocsCommandsCovered: every vagent command shown in a code block of
// README.md or docs/*.md is a command, and a testdata/script/*.txtar
// script runs it (as documented there: each script checks the exit status
// and output).
func TestDocsCommandsCovered(t *testing.T) {
	nested := nestedCommands()
	if !nested["image"] || !nested["builder"] || nested["run"] {
		t.Fatalf("nested commands %v: the summaries changed", nested)
	}
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{"../../README.md"}, docs...)
	shown := map[string][]string{} // command → documents
	for _, f := range docs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range docCommands(string(b), nested) {
			name := strings.TrimPrefix(f, "../../")
			if !slices.Contains(shown[k], name) {
				shown[k] = append(shown[k], name)
			}
		}
	}
	if len(shown) == 0 {
		t.Fatal("no vagent command found in the documentation")
	}

	scripts, err := filepath.Glob("testdata/script/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	run := map[string][]string{} // command → scripts
	for _, f := range scripts {
		a, err := txtar.ParseFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range scriptCommands(string(a.Comment), nested) {
			if !slices.Contains(run[k], filepath.Base(f)) {
				run[k] = append(run[k], filepath.Base(f))
			}
		}
	}

	root := testRoot()
	keys := make([]string, 0, len(shown))
	for k := range shown {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		top, _, _ := strings.Cut(k, " ")
		if c, _, err := root.Find(strings.Fields(k)); (err != nil || c == root || c.Name() != strings.Fields(k)[len(strings.Fields(k))-1]) && top != "help" {
			t.Errorf("%v show `vagent %s`: no such command", shown[k], k)
			continue
		}
		if len(run[k]) == 0 {
			t.Errorf("%v show `vagent %s`, which no testdata/script/*.txtar runs", shown[k], k)
			continue
		}
		t.Logf("vagent %-14s shown in %v, run by %v", k, shown[k], run[k])
	}
}
