package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

func TestCheckReportsMissing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		reqs     []sandbox.Requirement
		code     int
		stdout   []string
		stderrRe string
	}{
		{
			name:   "all ok",
			reqs:   []sandbox.Requirement{{Name: "kernel", OK: true, Detail: "6.18"}, {Name: "seccomp", OK: true, Detail: "yes"}},
			stdout: []string{"ok       kernel           6.18", "this host can run vagent builds"},
		},
		{
			name: "two missing",
			reqs: []sandbox.Requirement{
				{Name: "kernel", OK: true, Detail: "6.18"},
				{Name: "seccomp", Detail: "built without seccomp"},
				{Name: "disk space", Detail: "/var/lib/vagent has 10 MiB free"},
			},
			code:     1,
			stdout:   []string{"MISSING  seccomp          built without seccomp", "MISSING  disk space       /var/lib/vagent has 10 MiB free"},
			stderrRe: "missing: seccomp, disk space",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := checkHost
			defer func() { checkHost = orig }()
			checkHost = func(string, ...sandbox.Option) ([]sandbox.Requirement, error) { return tc.reqs, nil }
			var stdout, stderr bytes.Buffer
			code := run1([]string{"check", "-data-dir", t.TempDir()}, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.code, stderr.String())
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			if !strings.Contains(stderr.String(), tc.stderrRe) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.stderrRe)
			}
		})
	}
}

func TestCheckProbeError(t *testing.T) {
	orig := checkHost
	defer func() { checkHost = orig }()
	checkHost = func(string, ...sandbox.Option) ([]sandbox.Requirement, error) { return nil, errors.New("boom") }
	var stdout, stderr bytes.Buffer
	if code := run1([]string{"check"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "boom") {
		t.Errorf("exit %d stderr %q", code, stderr.String())
	}
}

// TestCheckDataModes: a tree of the data directory holding files of builds
// or images is reported when every host user can reach it, and not when a
// directory on the way is closed to them.
func TestCheckDataModes(t *testing.T) {
	base := sandboxtest.Dir(t) // o+x up to /
	data := filepath.Join(base, "data")
	for _, d := range []string{"sandbox/runs", "sandbox/m/42/kept", "images/rootfs", "pacman-cache/pkg"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if !reachableByAll(base) {
		t.Fatalf("%s is not reachable by others", base)
	}
	r := checkDataModes(data)
	if r.OK || !strings.Contains(r.Detail, filepath.Join(data, "sandbox/runs")) || !strings.Contains(r.Detail, filepath.Join(data, "images/rootfs")) ||
		!strings.Contains(r.Detail, filepath.Join(data, "sandbox/m/42/kept")) {
		t.Errorf("open trees: %+v", r)
	}
	for _, d := range []string{"sandbox/runs", "sandbox/m/42/kept", "images", "pacman-cache"} {
		if err := os.Chmod(filepath.Join(data, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if r := checkDataModes(data); !r.OK {
		t.Errorf("closed trees: %+v", r)
	}
}

// pushImage pushes a one-layer image holding files to the registry at
// host as repo:tag and returns its reference.
func pushImage(t *testing.T, host, repoTag string, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := host + "/" + repoTag
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

// dirTree lists every path under dir with its mode and size.
func dirTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d\n", p, fi.Mode(), fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestCheckConfig: `vagent check --config` also checks what the agent
// reaches, changing nothing: against a good setup it passes; a wrong key,
// a mirror that does not answer and pacman mirrors no repository uses are
// each named, and the exit status is 1; a server that does not answer,
// and a base image not in the store yet, are said too.
func TestCheckConfig(t *testing.T) {
	orig := checkHost
	defer func() { checkHost = orig }()
	checkHost = func(string, ...sandbox.Option) ([]sandbox.Requirement, error) {
		return []sandbox.Requirement{{Name: "kernel", OK: true, Detail: "fine"}}, nil
	}
	_, ts := vieterserver.NewTest(t, vieterserver.WithAPIKey(testKey))
	origin := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer origin.Close()
	mirror := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer mirror.Close()
	oh, mh := strings.TrimPrefix(origin.URL, "http://"), strings.TrimPrefix(mirror.URL, "http://")
	const withInclude = "[options]\nArchitecture = auto\n[core]\nInclude = /etc/pacman.d/mirrorlist\n"
	good := pushImage(t, oh, "arch/base:good", map[string]string{"etc/pacman.conf": withInclude})
	pushImage(t, mh, "arch/base:good", map[string]string{"etc/pacman.conf": withInclude})
	own := pushImage(t, oh, "arch/base:own", map[string]string{"etc/pacman.conf": "[core]\nServer = https://elsewhere.example/$repo\n"})
	dead := freeAddr(t)

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodKey, badKey := write("good-key", testKey+"\n"), write("bad-key", "not-the-key-0123456789\n")
	common := fmt.Sprintf("address: %s\ndata_dir: %s\npacman_mirrors: ['https://mirror.example/$repo/os/$arch']\n", ts.URL, data)
	goodCfg := write("good.yaml", common+fmt.Sprintf("registries:\n  mirrors: {%q: [%q]}\n", oh, "http://"+mh))
	down := write("down.yaml", fmt.Sprintf("address: http://%s\ndata_dir: %s\nregistries:\n  insecure: [%q]\n", dead, data, dead))
	badCfg := write("bad.yaml", common+fmt.Sprintf("registries:\n  mirrors: {%q: [%q, %q]}\n", oh, "http://"+dead, "http://"+mh))
	t.Setenv("VIETER_API_KEY_FILE", goodKey)
	for _, ref := range []string{good, own} {
		if code, _, errOut := runCLI("image", "pull", "--config", goodCfg, ref); code != 0 {
			t.Fatalf("image pull %s: exit %d: %s", ref, code, errOut)
		}
	}
	before := dirTree(t, dir)

	code, out, errOut := runCLI("check", "--config", goodCfg, "--base-image", good)
	if code != 0 {
		t.Errorf("a good setup: exit %d: %s\n%s", code, errOut, out)
	}
	for _, want := range []string{
		`(?m)^ok +server +` + regexp.QuoteMeta(ts.URL) + ` answers$`,
		`(?m)^ok +api key +accepted by the server$`,
		`(?m)^ok +base image +` + regexp.QuoteMeta(good) + `: mirror ` + regexp.QuoteMeta(mh) + `: has it, serves it; ` + regexp.QuoteMeta(oh) + `: has it$`,
		`(?m)^ok +pacman mirrors +used by core of ` + regexp.QuoteMeta(good) + `$`,
		`(?m)^this host and configuration can run vagent builds$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("a good setup: output lacks %s:\n%s", want, out)
		}
	}

	t.Setenv("VIETER_API_KEY_FILE", badKey)
	code, out, errOut = runCLI("check", "--config", badCfg, "--base-image", own, "--base-image", oh+"/arch/base:none")
	if code != 1 || !strings.Contains(errOut, "cannot run builds, missing: api key, base image, pacman mirrors") {
		t.Errorf("a bad setup: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`(?m)^MISSING +api key +the server rejects api_key: .*401`,
		`(?m)^MISSING +base image +` + regexp.QuoteMeta(own) + `: mirror ` + regexp.QuoteMeta(dead) + `: registry unreachable: .*; mirror ` + regexp.QuoteMeta(mh) + `: answers, does not have it; ` + regexp.QuoteMeta(oh) + `: has it, serves it$`,
		`(?m)^MISSING +base image +` + regexp.QuoteMeta(oh) + `/arch/base:none: no registry endpoint has it: `,
		`(?m)^MISSING +pacman mirrors +not used: no repository in the /etc/pacman.conf of ` + regexp.QuoteMeta(own) + ` includes /etc/pacman.d/mirrorlist`,
		`(?m)^skipped +pacman mirrors +not checked: ` + regexp.QuoteMeta(oh) + `/arch/base:none is not in the store yet`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("a bad setup: output lacks %s:\n%s", want, out)
		}
	}

	// A server that does not answer; a registry of the configuration that
	// no base image uses is asked whether it answers.
	code, out, _ = runCLI("check", "--config", down, "--base-image", good)
	for _, want := range []string{`(?m)^MISSING +server +http://` + regexp.QuoteMeta(dead) + ` does not answer: `,
		`(?m)^skipped +api key +not checked: the server does not answer$`, `(?m)^MISSING +registry +` + regexp.QuoteMeta(dead) + `: ` + regexp.QuoteMeta(dead) + `: registry unreachable`} {
		if code != 1 || !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("server down: exit %d, output lacks %s:\n%s", code, want, out)
		}
	}
	if code, _, errOut := runCLI("check", "--base-image", good); code != 2 || !strings.Contains(errOut, "--base-image needs --config") {
		t.Errorf("--base-image without --config: exit %d: %s", code, errOut)
	}
	if after := dirTree(t, dir); after != before {
		t.Errorf("vagent check changed the directory:\n%s\n---\n%s", before, after)
	}
}
