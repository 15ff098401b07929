// Command testreport reads the JSON event stream of `go test -json` on its
// standard input and prints what plain `go test` prints — each package's
// result line, and the output of failing tests — then the slowest tests.
// `make unit` pipes the tests through it, so a run ends with the list that
// says where the suite's time goes, a line on the host (CPUs, load, the
// cost of starting a process) and, last, the first line of each
// failure (a test's `file_test.go:N: message` lines): a log that keeps only
// its tail (CI's) still says why a test failed, even when the test printed
// pages of a process's output after its checks.
//
//	go test -json ./... | go run ./internal/testkit/cmd/testreport -slowest 10
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type result struct {
	pkg, test string
	elapsed   time.Duration
}

func main() {
	n := flag.Int("slowest", 10, "list the `N` slowest tests at the end")
	flag.Parse()
	failed, err := report(os.Stdin, os.Stdout, *n, hostLine)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// report copies the plain test output of the events in r to w, lists the
// n slowest tests, the host line, and the first line of each failure. It reports whether a test or a package failed.
func report(r io.Reader, w io.Writer, n int, host func() string) (failed bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	pending := map[string][]string{} // package/test → its output so far
	var results []result
	var failures []string // "pkg TestX: file_test.go:N: first line"
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(w, "%s\n", line) // a build error, printed as is
			continue
		}
		key := e.Package + "/" + e.Test
		switch {
		case e.Action == "output" && e.Test == "":
			// Package lines: "ok  pkg 1.2s", "FAIL pkg", "--- FAIL" of
			// TestMain, panics. Skip the bare "PASS"/"FAIL" summary.
			if s := strings.TrimSpace(e.Output); s != "PASS" && s != "FAIL" && !strings.HasPrefix(s, "=== ") {
				fmt.Fprint(w, e.Output)
			}
		case e.Action == "output":
			pending[key] = append(pending[key], e.Output)
		case e.Action == "pass" || e.Action == "skip":
			if e.Test != "" {
				delete(pending, key)
				if e.Action == "pass" && !strings.Contains(e.Test, "/") {
					results = append(results, result{e.Package, e.Test, time.Duration(e.Elapsed * float64(time.Second))})
				}
			}
		case e.Action == "fail":
			failed = true
			if e.Test != "" {
				for _, o := range pending[key] {
					fmt.Fprint(w, o)
					if m := failureLine.FindStringSubmatch(o); m != nil {
						failures = append(failures, fmt.Sprintf("%s %s: %s", e.Package, e.Test, truncate(m[1], 300)))
					}
				}
				delete(pending, key)
				if !strings.Contains(e.Test, "/") {
					results = append(results, result{e.Package, e.Test, time.Duration(e.Elapsed * float64(time.Second))})
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return failed, err
	}
	sort.Slice(results, func(i, j int) bool { return results[i].elapsed > results[j].elapsed })
	if len(results) > 0 && n > 0 {
		fmt.Fprintf(w, "\nslowest tests:\n")
		for _, r := range results[:min(n, len(results))] {
			fmt.Fprintf(w, "%9s  %s %s\n", r.elapsed.Round(100*time.Millisecond), r.pkg, r.test)
		}
	}
	fmt.Fprintln(w, host())
	if len(failures) > 0 {
		fmt.Fprintf(w, "\nfailures (first lines):\n")
		for _, f := range failures {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	return failed, nil
}

// hostLine says what the suite's time depends on besides its code: CPUs,
// load, and what starting a process costs (fork and exec of a static
// program, and of bash, which makepkg and the build script are). Suites
// whose builds start thousands of processes (makepkg, pacman, fakeroot)
// take several times longer on a host where that is slow, so a slow run's
// log says whether the host or the code changed.
func hostLine() string {
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("host: %d CPUs, load %s; process start: %s (/bin/true), %s (bash -c :)",
		runtime.NumCPU(), load, spawnCost("/bin/true"), spawnCost("bash", "-c", ":"))
}

// spawnCost is the median wall time of 21 runs of a command.
func spawnCost(name string, args ...string) string {
	var d []time.Duration
	for range 21 {
		start := time.Now()
		if err := exec.Command(name, args...).Run(); err != nil {
			return "n/a"
		}
		d = append(d, time.Since(start))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2].Round(10 * time.Microsecond).String()
}

// failureLine is the first line of a t.Error/t.Fatal message as go test
// prints it: indented, the file and line, the message.
var failureLine = regexp.MustCompile(`^\s+([\w.-]+_test\.go:\d+: .*)`)

// truncate shortens s to n bytes, marking the cut.
func truncate(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
