package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vieter-v/vagent/sandbox"
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
