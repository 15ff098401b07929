package vieterserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPacmanReadsRepository publishes a package and lets the real pacman
// refresh the repository, find the package and install it into a
// throw-away root. pacman refuses -Sy unless root, so the test needs root
// and the Debian package pacman-package-manager.
func TestPacmanReadsRepository(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("pacman -Sy needs root")
	}
	pacman, err := exec.LookPath("pacman")
	if err != nil {
		t.Skip("pacman not installed (Debian package pacman-package-manager)")
	}
	s, ts := newServer(t)
	for _, p := range [][]byte{
		mustPackageDeps(t, "vagent-hello", "1.2-3", "x86_64", Zstd, nil),
		mustPackageDeps(t, "vagent-dep", "1:0.1-1", "any", Gzip, nil),
		mustPackageDeps(t, "vagent-app", "2.0-1", "x86_64", Zstd, []string{"vagent-dep>=1:0.1"}),
	} {
		if code, msg := publish(t, ts, ts.URL, "bur", p); code != 200 {
			t.Fatalf("publish: %d %s", code, msg)
		}
	}
	_ = s

	dir := t.TempDir()
	for _, d := range []string{"root", "db", "cache", "gnupg", "hooks"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "pacman.conf")
	err = os.WriteFile(conf, []byte(strings.Join([]string{
		"[options]",
		"RootDir = " + filepath.Join(dir, "root"),
		"DBPath = " + filepath.Join(dir, "db"),
		"CacheDir = " + filepath.Join(dir, "cache"),
		"LogFile = " + filepath.Join(dir, "pacman.log"),
		"GPGDir = " + filepath.Join(dir, "gnupg"),
		"HookDir = " + filepath.Join(dir, "hooks"),
		"Architecture = x86_64",
		"SigLevel = Never",
		"",
		"[bur]",
		"Server = " + ts.URL + "/$repo/$arch",
		"",
	}, "\n")), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), pacman, append([]string{"--config", conf, "--noconfirm",
			"--root", filepath.Join(dir, "root"), "--dbpath", filepath.Join(dir, "db")}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pacman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("-Sy")
	info := run("-Si", "bur/vagent-hello")
	for _, want := range []string{"vagent-hello", "1.2-3", "test package vagent-hello"} {
		if !strings.Contains(info, want) {
			t.Errorf("pacman -Si lacks %q:\n%s", want, info)
		}
	}
	if out := run("-Ss", "vagent"); !strings.Contains(out, "bur/vagent-dep 1:0.1-1") {
		t.Errorf("pacman -Ss:\n%s", out)
	}
	// Installing resolves the dependency from the repository, downloads the
	// archives and checks their sizes and checksums against the database.
	run("-S", "vagent-app")
	run("-S", "vagent-hello")
	for _, f := range []string{"usr/bin/vagent-hello", "usr/bin/vagent-app"} {
		if _, err := os.Stat(filepath.Join(dir, "root", f)); err != nil {
			t.Errorf("installed file: %v", err)
		}
	}
	if out := run("-Q"); !strings.Contains(out, "vagent-dep 1:0.1-1") || !strings.Contains(out, "vagent-app 2.0-1") {
		t.Errorf("pacman -Q:\n%s", out)
	}
	// The files database.
	run("-Fy")
	if out := run("-Fl", "vagent-hello"); !strings.Contains(out, "usr/bin/vagent-hello") {
		t.Errorf("pacman -Fl:\n%s", out)
	}
}

func mustPackageDeps(t *testing.T, name, version, arch string, c Compression, deps []string) []byte {
	t.Helper()
	b, err := MakePackage(PkgInfo{Name: name, Version: version, Arch: arch, Desc: "test package " + name, Depends: deps},
		map[string]string{"usr/": "", "usr/bin/": "", "usr/bin/" + name: "#!/bin/sh\necho hi\n"}, c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
