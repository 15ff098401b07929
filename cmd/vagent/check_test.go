package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
