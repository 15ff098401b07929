package pacman

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"bur", "a+b", "core-testing", "x86_64", "r.1", "A9"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	long := make([]byte, 129)
	for i := range long {
		long[i] = 'a'
	}
	for _, bad := range []string{"", "_x", ".x", "-x", "options", "a b", "a]\n[b", "a/b", "a$b", string(long)} {
		if err := ValidateName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted (%v)", bad, err)
		}
	}
}

func TestRepoValidateAndSection(t *testing.T) {
	r, err := Repo{Name: "deps", Servers: []string{"https://a.example/$repo/$arch", "file:///srv/repo"}, SigLevel: " Optional   TrustAll "}.Validate()
	if err != nil {
		t.Fatal(err)
	}
	want := "[deps]\nSigLevel = Optional TrustAll\nServer = https://a.example/$repo/$arch\nServer = file:///srv/repo\n"
	if got := r.Section(); got != want {
		t.Errorf("section:\n%s\nwant:\n%s", got, want)
	}
	if got := (Repo{Name: "x", Servers: []string{"https://x"}}).Section(); got != "[x]\nServer = https://x\n" {
		t.Errorf("empty SigLevel: %q, want no SigLevel line (pacman's default)", got)
	}
	for name, bad := range map[string]Repo{
		"no server":        {Name: "a"},
		"relative server":  {Name: "a", Servers: []string{"mirror.example"}},
		"server newline":   {Name: "a", Servers: []string{"https://a\n[evil]"}},
		"ftp server":       {Name: "a", Servers: []string{"ftp://a/x"}},
		"siglevel newline": {Name: "a", Servers: []string{"https://a"}, SigLevel: "Never\nServer = x"},
		"siglevel symbols": {Name: "a", Servers: []string{"https://a"}, SigLevel: "Never=1"},
	} {
		if _, err := bad.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s accepted (%v)", name, err)
		}
	}
}

func TestConfWritesEachRepositoryOnce(t *testing.T) {
	got := Conf([]Repo{
		{Name: "a", Servers: []string{"https://1", "https://2"}},
		{Name: "b", Servers: []string{"https://3"}, SigLevel: "Never"},
		{Name: "a", Servers: []string{"https://4"}},
	})
	want := "[a]\nServer = https://1\nServer = https://2\n\n[b]\nSigLevel = Never\nServer = https://3\n\n"
	if got != want {
		t.Errorf("Conf:\n%q\nwant\n%q", got, want)
	}
	if MirrorList(nil) != "" || MirrorList([]string{"https://m/$repo"}) != "# Written by vagent (mirror list of its configuration).\nServer = https://m/$repo\n" {
		t.Error("MirrorList")
	}
}

func TestValidatePackageFile(t *testing.T) {
	for _, ok := range []string{
		"trivial-1-1-any.pkg.tar.zst", "gnome-shell-1:45.0-1-x86_64.pkg.tar.zst", "lib32-gcc-libs-13.2.1+r1-2-x86_64.pkg.tar.xz",
		"python-foo_bar-1.0.r12.gabc-1.1-any.pkg.tar", "a@b-1-1-aarch64.pkg.tar.gz", "x-1_2-3-armv7h.pkg.tar.zst",
	} {
		if err := ValidatePackageFile(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	long := strings.Repeat("a", MaxPackageFile) + "-1-1-any.pkg.tar.zst"
	for _, bad := range []string{
		"", "x.pkg.tar.zst", "-x-1-1-any.pkg.tar.zst", ".x-1-1-any.pkg.tar.zst", "x-1-1-any.pkg.tar.zst.sig",
		"x y-1-1-any.pkg.tar.zst", "x\n-1-1-any.pkg.tar.zst", "evil\u202egpj-1-1-any.pkg.tar.zst", "x\xff-1-1-any.pkg.tar.zst",
		"x-1:2:3-1-any.pkg.tar.zst", "x-a:1-1-any.pkg.tar.zst", "x-1-1-any.pkg.tar.zst/..", "x/y-1-1-any.pkg.tar.zst", long,
	} {
		if err := ValidatePackageFile(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted (%v)", bad, err)
		}
	}
}

func TestMirrorListUsers(t *testing.T) {
	for conf, want := range map[string]string{
		"[options]\nInclude = /etc/pacman.d/mirrorlist\n[core]\nInclude = /etc/pacman.d/mirrorlist\n#[testing]\n#Include = /etc/pacman.d/mirrorlist\n[extra]\n  Include=/etc/pacman.d/mirrorlist # comment\n": "core extra",
		"[core]\nServer = https://example.org/$repo\n[extra]\nInclude = /etc/pacman.d/other\n":                                                                                                                "",
		"Include = /etc/pacman.d/mirrorlist\n": "",
	} {
		if got := strings.Join(MirrorListUsers(conf), " "); got != want {
			t.Errorf("%q: %q, want %q", conf, got, want)
		}
	}
}

func TestArch(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7h", "386": "i686",
		"riscv64": "riscv64", "ppc64le": "powerpc64le", "ppc64": "powerpc64", "loong64": "loong64"} {
		if got := Arch(goarch); got != want {
			t.Errorf("Arch(%s) = %s, want %s", goarch, got, want)
		}
		if err := ValidateArch(Arch(goarch)); err != nil {
			t.Errorf("ValidateArch(Arch(%s)): %v", goarch, err)
		}
	}
	for _, bad := range []string{"", "x86-64", "x86_64 ", "any\n", "../x", "arm/v7"} {
		if err := ValidateArch(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateArch(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := ValidateArch("any"); err != nil {
		t.Errorf("ValidateArch(any): %v", err)
	}
}
