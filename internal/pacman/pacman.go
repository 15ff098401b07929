// Package pacman is vagent's one home of Pacman's names: a repository as
// the agent configures it (the Repo type, the validation of its name,
// servers and SigLevel, and the text it becomes in pacman.conf and in a
// mirror list), architectures (Arch, ValidateArch) and package file names
// (ValidatePackageFile). The configuration (cmd/vagent), builder images
// (builder) and builds (job) all use it, so a name one of them accepts is
// accepted by all.
//
// Where repositories go: the configured ones (pacman_repos) are written
// into the builder image's pacman.conf by its setup — the setup may need
// them (builder packages from a local repository) and the builder's recipe
// covers them, so a change makes a new builder. A build adds only the
// job's repository, and no section whose name its pacman.conf has already:
// each repository appears exactly once in the configuration a build sees.
package pacman

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// ErrInvalid reports a repository, server or SigLevel that cannot be used.
var ErrInvalid = errors.New("invalid pacman configuration")

// Repo is a Pacman repository.
type Repo struct {
	// Name is the section name, "[Name]"; see ValidateName.
	Name string
	// Servers are tried in order; Pacman expands $repo and $arch.
	Servers []string
	// SigLevel is the repository's SigLevel, e.g. "Optional TrustAll";
	// empty keeps Pacman's default (no SigLevel line is written).
	SigLevel string
}

// nameRE is what a repository name may be: a pacman.conf section, a URL
// path segment of a Vieter server and a file name (<name>.db).
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// MaxPackageFile is the longest package file name ValidatePackageFile
// accepts, in bytes: room below the usual 255-byte limit of a file name
// for the temporaries a copy makes beside it.
const MaxPackageFile = 200

// packageFileRE is a package file name as makepkg makes it,
// name-[epoch:]pkgver-pkgrel-arch.pkg.tar[.ext], in Arch's character set
// (letters, digits and "@._+-"; the name does not start with "-" or ".")
// plus the colon of an epoch.
var packageFileRE = regexp.MustCompile(`^[A-Za-z0-9@_+][A-Za-z0-9@._+-]*-(?:[0-9]+:)?[A-Za-z0-9._+]+-[0-9][A-Za-z0-9.]*-[A-Za-z0-9_]+\.pkg\.tar(?:\.[A-Za-z0-9]+)?$`)

// ValidatePackageFile checks the file name of a package a build made
// before the agent copies or publishes it: the form makepkg gives it, in
// Arch's character set, at most MaxPackageFile bytes. So no name with
// Unicode direction marks, invalid UTF-8 or a length that would make a
// copy fail half-way reaches a repository or an output directory.
func ValidatePackageFile(name string) error {
	switch {
	case len(name) > MaxPackageFile:
		return fmt.Errorf("%w: package file name of %d bytes, more than %d", ErrInvalid, len(name), MaxPackageFile)
	case !packageFileRE.MatchString(name):
		return fmt.Errorf("%w: package file name %q (want name-[epoch:]version-release-arch.pkg.tar[.ext] of letters, digits and @._+-)", ErrInvalid, name)
	}
	return nil
}

// ValidateName checks a repository name: a letter or digit, then letters,
// digits and "._+-", at most 128 characters, and not "options" (pacman's
// own section).
func ValidateName(name string) error {
	if !nameRE.MatchString(name) || name == "options" {
		return fmt.Errorf("%w: repository name %q (want a letter or digit, then letters, digits and ._+-; not options)", ErrInvalid, name)
	}
	return nil
}

// archRE is a Pacman architecture name: x86_64, aarch64, armv7h, any…
var archRE = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// ValidateArch checks a Pacman architecture name (letters, digits and
// '_', as makepkg's CARCH and the Vieter server's arch parameter).
func ValidateArch(arch string) error {
	if !archRE.MatchString(arch) {
		return fmt.Errorf("%w: architecture %q (want a Pacman architecture name such as x86_64)", ErrInvalid, arch)
	}
	return nil
}

// Arch returns Pacman's name for a Go architecture (runtime.GOARCH): the
// names of Arch Linux and its ports (Arch Linux ARM, Arch Linux 32,
// Arch POWER).
func Arch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "arm":
		return "armv7h"
	case "386":
		return "i686"
	case "ppc64le":
		return "powerpc64le"
	case "ppc64":
		return "powerpc64"
	}
	return goarch // riscv64, loong64, s390x: the same name
}

// sigLevelRE is one or more words of letters: Pacman's SigLevel options
// (Never, Optional, Required, TrustedOnly, TrustAll, Package…, Database…).
var sigLevelRE = regexp.MustCompile(`^[A-Za-z]+( [A-Za-z]+)*$`)

// NormalizeSigLevel returns s with its words separated by single spaces,
// or an error if it is not a SigLevel. "" stays "" (Pacman's default).
func NormalizeSigLevel(s string) (string, error) {
	s = strings.Join(strings.Fields(s), " ")
	if s != "" && !sigLevelRE.MatchString(s) {
		return "", fmt.Errorf("%w: SigLevel %q", ErrInvalid, s)
	}
	return s, nil
}

// ValidateServer checks a Server URL: http, https or file, absolute, on
// one line, without spaces or a fragment. $repo and $arch may appear.
func ValidateServer(s string) error {
	u, err := url.Parse(s)
	if err != nil || strings.ContainsAny(s, "\r\n\t #\x00") ||
		(u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") || (u.Host == "" && u.Scheme != "file") {
		return fmt.Errorf("%w: server %q (want an http, https or file URL)", ErrInvalid, s)
	}
	return nil
}

// Validate checks r and returns it with its SigLevel normalized.
func (r Repo) Validate() (Repo, error) {
	if err := ValidateName(r.Name); err != nil {
		return r, err
	}
	if len(r.Servers) == 0 {
		return r, fmt.Errorf("%w: repository %s has no server", ErrInvalid, r.Name)
	}
	for _, s := range r.Servers {
		if err := ValidateServer(s); err != nil {
			return r, fmt.Errorf("repository %s: %w", r.Name, err)
		}
	}
	sl, err := NormalizeSigLevel(r.SigLevel)
	if err != nil {
		return r, fmt.Errorf("repository %s: %w", r.Name, err)
	}
	r.SigLevel = sl
	r.Servers = append([]string(nil), r.Servers...)
	return r, nil
}

// Section is r's section of pacman.conf: "[name]", its SigLevel if any,
// then one Server line per server, in order.
func (r Repo) Section() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s]\n", r.Name)
	if r.SigLevel != "" {
		fmt.Fprintf(&b, "SigLevel = %s\n", r.SigLevel)
	}
	for _, s := range r.Servers {
		fmt.Fprintf(&b, "Server = %s\n", s)
	}
	return b.String()
}

// Conf returns the sections of repos, each once and followed by a blank
// line: a repository whose name came before is left out (the first one
// wins).
func Conf(repos []Repo) string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, r := range repos {
		if seen[r.Name] {
			continue
		}
		seen[r.Name] = true
		b.WriteString(r.Section())
		b.WriteString("\n")
	}
	return b.String()
}

// MirrorList is the content of /etc/pacman.d/mirrorlist for servers, ""
// for none.
func MirrorList(servers []string) string {
	if len(servers) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("# Written by vagent (mirror list of its configuration).\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "Server = %s\n", s)
	}
	return b.String()
}

// MirrorListPath is where the mirror list is, and what a repository
// includes to use it.
const MirrorListPath = "/etc/pacman.d/mirrorlist"

// MirrorListUsers returns the repositories of a pacman.conf whose section
// includes the mirror list (Include = /etc/pacman.d/mirrorlist): those a
// configured mirror list serves. Files included from the options or
// included files are not read.
func MirrorListUsers(conf string) []string {
	var users []string
	section := ""
	for _, line := range strings.Split(conf, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.TrimSpace(k) == "Include" && strings.TrimSpace(v) == MirrorListPath && section != "" && section != "options" &&
			(len(users) == 0 || users[len(users)-1] != section) {
			users = append(users, section)
		}
	}
	return users
}
