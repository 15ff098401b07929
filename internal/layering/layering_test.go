package layering

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/vieter-v/vagent"

// allowed lists, for each production package, the packages of this module
// it may import directly: the "depends on" column of docs/architecture.md.
// A package missing here fails the test, so a new package has to be given
// its place.
var allowed = map[string][]string{
	// Leaves: they know nothing of the rest of vagent.
	"vieter":            nil,
	"internal/pacman":   nil,
	"internal/lockfile": nil,
	// Containers: instance directories and records through lockfile.
	"sandbox": {"internal/lockfile"},
	// Images: no process, no server.
	"oci": {"internal/lockfile"},
	// The agent loop: no root, no images, no containers.
	"poll": {"internal/lockfile", "vieter"},
	// Builder images compose images and the sandbox.
	"builder": {"internal/lockfile", "internal/pacman", "oci", "sandbox"},
	// A job composes everything below the CLI.
	"job":              {"builder", "internal/lockfile", "internal/pacman", "oci", "poll", "sandbox", "vieter"},
	"internal/metrics": {"oci", "poll"},
	"cmd/vagent":       {"builder", "internal/lockfile", "internal/metrics", "internal/pacman", "job", "oci", "poll", "sandbox", "vieter"},
	// Test infrastructure and its commands.
	"internal/vieterserver":                       nil,
	"internal/vieterserver/cmd/vieter-testserver": {"internal/vieterserver"},
	"internal/testkit":                            {"internal/vieterserver", "oci"},
	"internal/testkit/cmd/demo":                   {"internal/testkit"},
	"internal/testkit/cmd/testimages":             {"internal/testkit"},
	"internal/testkit/cmd/testreport":             nil,
	"sandbox/sandboxtest":                         nil,
	"internal/layering":                           nil,
}

// testInfra are the packages only tests (and the test tools under
// internal/testkit/cmd and internal/vieterserver/cmd) may depend on.
var testInfra = []string{"internal/testkit", "internal/vieterserver", "sandbox/sandboxtest"}

type pkg struct {
	path    string
	imports []string // direct, of this module
	deps    []string // transitive, of this module
}

// list returns the module's packages as `go list` sees them with the
// build tags of the Makefile.
func list(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-tags", "seccomp", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "|")
		if len(parts) != 3 {
			t.Fatalf("go list line %q", sc.Text())
		}
		pkgs = append(pkgs, pkg{path: local(parts[0]), imports: ours(parts[1]), deps: ours(parts[2])})
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	return pkgs
}

// local strips the module path.
func local(p string) string {
	if p == module {
		return "."
	}
	return strings.TrimPrefix(p, module+"/")
}

// ours returns the packages of this module among the space-separated paths.
func ours(s string) []string {
	var r []string
	for _, p := range strings.Fields(s) {
		if p == module || strings.HasPrefix(p, module+"/") {
			r = append(r, local(p))
		}
	}
	return r
}

// TestLayering fails when a package imports a package of this module that
// its row in allowed does not name, when a package has no row, and when a
// production package depends, even indirectly, on the test infrastructure.
func TestLayering(t *testing.T) {
	for _, p := range list(t) {
		want, ok := allowed[p.path]
		if !ok {
			t.Errorf("package %s has no place in the layering rules (internal/layering and docs/architecture.md)", p.path)
			continue
		}
		for _, imp := range p.imports {
			if !slices.Contains(want, imp) {
				t.Errorf("%s imports %s, which docs/architecture.md does not allow", p.path, imp)
			}
		}
		if isTestInfra(p.path) {
			continue
		}
		for _, d := range p.deps {
			if isTestInfra(d) {
				t.Errorf("production package %s depends on the test infrastructure %s", p.path, d)
			}
		}
	}
}

func isTestInfra(p string) bool {
	for _, ti := range testInfra {
		if p == ti || strings.HasPrefix(p, ti+"/") {
			return true
		}
	}
	return false
}

// TestRulesAreLive keeps the rules honest: every row names a package that
// exists, and every allowed import is one the package really has (a rule
// wider than the code hides the next violation).
func TestRulesAreLive(t *testing.T) {
	pkgs := map[string]pkg{}
	for _, p := range list(t) {
		pkgs[p.path] = p
	}
	for path, want := range allowed {
		p, ok := pkgs[path]
		if !ok {
			t.Errorf("rule for %s, which does not exist", path)
			continue
		}
		for _, w := range want {
			if !slices.Contains(p.imports, w) {
				t.Errorf("rule lets %s import %s, which it does not: narrow the rule", path, w)
			}
		}
	}
}
