package job

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// SrcInfo is what the agent needs from a .SRCINFO (the format of makepkg
// --printsrcinfo; build.sh prints these fields of it): the package names
// and the version they are built at.
// It comes from the build and is untrusted: ParseSrcInfo validates every
// value it keeps.
type SrcInfo struct {
	Base    string
	Names   []string // pkgname of every package section, in order
	Epoch   string   // "" when the PKGBUILD has none (or 0)
	Version string   // pkgver
	Release string   // pkgrel
	Arch    []string
}

// FullVersion is [epoch:]pkgver-pkgrel, the version the repository uses.
func (s *SrcInfo) FullVersion() string {
	v := s.Version + "-" + s.Release
	if s.Epoch != "" && s.Epoch != "0" {
		v = s.Epoch + ":" + v
	}
	return v
}

// MaxSrcInfo bounds the size of a .SRCINFO the agent reads.
const MaxSrcInfo = 1 << 20

// SrcInfoWithin bounds the time from the first byte a build writes into
// the srcinfo FIFO to the last byte of the .SRCINFO. build.sh writes the
// length line and the .SRCINFO at once, so only a forged or stalled
// header takes longer; the agent then answers "fail" (incomplete
// .SRCINFO) rather than waiting for the job's timeout. The time before
// the first byte (makepkg --nobuild: sources, dependencies) is the job's.
const SrcInfoWithin = 30 * time.Second

// maxSrcInfoNames bounds the package names of a .SRCINFO (the skip check
// asks the server about each), maxSrcInfoArchs its arch entries.
const (
	maxSrcInfoNames = 64 // as many as a build may publish
	maxSrcInfoArchs = 16
)

var (
	pkgNameRE = regexp.MustCompile(`^[a-z0-9@_+][a-z0-9@._+-]{0,127}$`)
	pkgVerRE  = regexp.MustCompile(`^[A-Za-z0-9._+]{1,128}$`)
	pkgRelRE  = regexp.MustCompile(`^[0-9]{1,9}(\.[0-9]{1,9})?$`)
	epochRE   = regexp.MustCompile(`^[0-9]{1,9}$`)
	archRE    = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)
)

// ParseSrcInfo reads a .SRCINFO: "key = value" lines, a pkgbase section
// first, then one pkgname section per package. pkgver, pkgrel and epoch
// are taken from the pkgbase section (makepkg does not let a package
// override them). At most MaxSrcInfo bytes are read.
func ParseSrcInfo(r io.Reader) (*SrcInfo, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSrcInfo+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSrcInfo, err)
	}
	if len(data) > MaxSrcInfo {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrSrcInfo, MaxSrcInfo)
	}
	var (
		s       SrcInfo
		section string // "", "base" or "pkg"
		seen    = map[string]bool{}
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxSrcInfo)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: no '='", ErrSrcInfo, n)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "pkgbase":
			if section != "" {
				return nil, fmt.Errorf("%w: line %d: second pkgbase", ErrSrcInfo, n)
			}
			if !pkgNameRE.MatchString(value) {
				return nil, fmt.Errorf("%w: line %d: pkgbase %q", ErrSrcInfo, n, value)
			}
			section, s.Base = "base", value
		case "pkgname":
			if section == "" {
				return nil, fmt.Errorf("%w: line %d: pkgname before pkgbase", ErrSrcInfo, n)
			}
			if !pkgNameRE.MatchString(value) {
				return nil, fmt.Errorf("%w: line %d: pkgname %q", ErrSrcInfo, n, value)
			}
			if seen[value] {
				return nil, fmt.Errorf("%w: line %d: pkgname %q twice", ErrSrcInfo, n, value)
			}
			if len(s.Names) == maxSrcInfoNames {
				return nil, fmt.Errorf("%w: line %d: more than %d packages", ErrSrcInfo, n, maxSrcInfoNames)
			}
			seen[value] = true
			section = "pkg"
			s.Names = append(s.Names, value)
		case "pkgver", "pkgrel", "epoch":
			if section != "base" {
				return nil, fmt.Errorf("%w: line %d: %s outside the pkgbase section", ErrSrcInfo, n, key)
			}
			re, dst := pkgVerRE, &s.Version
			switch key {
			case "pkgrel":
				re, dst = pkgRelRE, &s.Release
			case "epoch":
				re, dst = epochRE, &s.Epoch
			}
			if *dst != "" {
				return nil, fmt.Errorf("%w: line %d: %s twice", ErrSrcInfo, n, key)
			}
			if !re.MatchString(value) {
				return nil, fmt.Errorf("%w: line %d: %s %q", ErrSrcInfo, n, key, value)
			}
			*dst = value
		case "arch":
			if section == "base" {
				if !archRE.MatchString(value) {
					return nil, fmt.Errorf("%w: line %d: arch %q", ErrSrcInfo, n, value)
				}
				if len(s.Arch) == maxSrcInfoArchs {
					return nil, fmt.Errorf("%w: line %d: more than %d arch entries", ErrSrcInfo, n, maxSrcInfoArchs)
				}
				s.Arch = append(s.Arch, value)
			}
		default:
			if section == "" {
				return nil, fmt.Errorf("%w: line %d: %s before pkgbase", ErrSrcInfo, n, key)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSrcInfo, err)
	}
	switch {
	case s.Base == "":
		return nil, fmt.Errorf("%w: no pkgbase", ErrSrcInfo)
	case len(s.Names) == 0:
		return nil, fmt.Errorf("%w: no pkgname", ErrSrcInfo)
	case s.Version == "" || s.Release == "":
		return nil, fmt.Errorf("%w: no pkgver or pkgrel", ErrSrcInfo)
	}
	return &s, nil
}
