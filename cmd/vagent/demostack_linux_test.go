package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/sandbox"
)

// TestDemoStackGuide: the command lines `make demo-stack` prints work as
// printed: `vagent check --config` finds the server, the key and the base
// image; the flags of every other vagent line parse; the curl lines queue
// a job and list logs. (That the stack's agent.yaml builds — its builder
// from the base image and the deps repository — is TestRunEndToEnd's: the
// same Stack and AgentYAML. A build here would prepare one more builder,
// a minute of the test budget.)
func TestDemoStackGuide(t *testing.T) {
	t.Parallel() // own stack, directory and ports
	if !sandbox.SeccompSupported {
		testkit.Unavailable(t, "vagent build needs a binary built with -tags seccomp (make test builds it so)")
	}
	testkit.RequireRoot(t)
	testkit.RequireTool(t, testkit.RegistryBinary, "docker-registry")
	testkit.ArchLike(t)
	bin := agentBinary(t)
	dir, err := os.MkdirTemp("", "vagent-demo-stack-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	d, err := testkit.StartDemoStack(ctx, bin, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var guide bytes.Buffer
	if err := d.Guide(&guide); err != nil {
		t.Fatal(err)
	}
	var vagentLines, curlLines [][]string
	for _, line := range strings.Split(guide.String(), "\n") {
		words := shellWords(strings.TrimSpace(line))
		if len(words) == 0 {
			continue
		}
		if words[0] == "sudo" {
			words = words[1:]
		}
		switch {
		case len(words) > 1 && words[0] == bin:
			vagentLines = append(vagentLines, words[1:])
		case words[0] == "curl":
			curlLines = append(curlLines, words[1:])
		}
	}
	if len(vagentLines) != 6 || len(curlLines) != 2 {
		t.Fatalf("%d vagent and %d curl lines in the guide:\n%s", len(vagentLines), len(curlLines), guide.String())
	}
	run := func(args ...string) (int, string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	for _, args := range vagentLines {
		switch args[0] {
		case "check":
			_, out := run(args...)
			for _, want := range []string{`(?m)^ok +server `, `(?m)^ok +api key `, `(?m)^ok +base image +` + regexp.QuoteMeta(d.BaseImage) + `: .*has it, serves it`} {
				if !regexp.MustCompile(want).MatchString(out) {
					t.Errorf("%v: output lacks %s:\n%s", args, want, out)
				}
			}
		default:
			if code, out := run(append(args, "--help")...); code != 0 {
				t.Errorf("%v --help: exit %d:\n%s", args, code, out)
			}
		}
	}
	for _, args := range curlLines {
		method, url, header := http.MethodGet, "", ""
		for i := 0; i < len(args); i++ {
			switch args[i] {
			case "-X":
				i++
				method = args[i]
			case "-H":
				i++
				header = args[i]
			default:
				url = args[i]
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		k, v, _ := strings.Cut(header, ": ")
		req.Header.Set(k, v)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("curl %v: %s", args, resp.Status)
		}
	}
	if q := d.Server.Queued(d.Arch); len(q) != 2 {
		t.Errorf("queue %v: want the stack's job and the one the curl line queued", q)
	}
}

// shellWords splits a command line as sh would, for the quoting the guide
// uses: words separated by spaces, '…' and "…" quotes (no escapes).
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}
