package job_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vieter-v/vagent/job"
)

// manyLines repeats format, numbered from 0, n times.
func manyLines(format string, n int) string {
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, format, i)
	}
	return sb.String()
}

func TestParseSrcInfo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    *job.SrcInfo
		version string
		err     bool
	}{
		{"simple", "pkgbase = hello\n\tpkgdesc = x = y\n\tpkgver = 1.2\n\tpkgrel = 3\n\tarch = any\n\npkgname = hello\n",
			&job.SrcInfo{Base: "hello", Names: []string{"hello"}, Version: "1.2", Release: "3", Arch: []string{"any"}}, "1.2-3", false},
		{"epoch", "pkgbase = e\n\tpkgver = 1.0\n\tpkgrel = 1\n\tepoch = 2\npkgname = e\n",
			&job.SrcInfo{Base: "e", Names: []string{"e"}, Epoch: "2", Version: "1.0", Release: "1"}, "2:1.0-1", false},
		{"epoch 0", "pkgbase = e\npkgver = 1\npkgrel = 1\nepoch = 0\npkgname = e\n",
			&job.SrcInfo{Base: "e", Names: []string{"e"}, Epoch: "0", Version: "1", Release: "1"}, "1-1", false},
		{"split", "# comment\npkgbase = s\n\tpkgver = 3.1\n\tpkgrel = 2.1\n\tarch = x86_64\n\tarch = aarch64\n\tdepends_x86_64 = foo\n\npkgname = s-a\n\tarch = any\n\tdepends = bar\n\npkgname = s-b\n",
			&job.SrcInfo{Base: "s", Names: []string{"s-a", "s-b"}, Version: "3.1", Release: "2.1", Arch: []string{"x86_64", "aarch64"}}, "3.1-2.1", false},
		{"empty", "", nil, "", true},
		{"65 packages", "pkgbase = a\npkgver = 1\npkgrel = 1\n" + manyLines("pkgname = p%d\n", 65), nil, "", true},
		{"17 archs", "pkgbase = a\npkgver = 1\npkgrel = 1\n" + manyLines("arch = a%d\n", 17) + "pkgname = a\n", nil, "", true},
		{"no pkgname", "pkgbase = a\npkgver = 1\npkgrel = 1\n", nil, "", true},
		{"no pkgrel", "pkgbase = a\npkgver = 1\npkgname = a\n", nil, "", true},
		{"name before base", "pkgname = a\npkgbase = a\n", nil, "", true},
		{"key before base", "pkgver = 1\npkgbase = a\n", nil, "", true},
		{"version in package", "pkgbase = a\npkgver = 1\npkgrel = 1\npkgname = a\npkgver = 2\n", nil, "", true},
		{"two pkgver", "pkgbase = a\npkgver = 1\npkgver = 2\npkgrel = 1\npkgname = a\n", nil, "", true},
		{"duplicate name", "pkgbase = a\npkgver = 1\npkgrel = 1\npkgname = a\npkgname = a\n", nil, "", true},
		{"no equals", "pkgbase = a\ngarbage\n", nil, "", true},
		{"slash in name", "pkgbase = a\npkgver = 1\npkgrel = 1\npkgname = ../../x\n", nil, "", true},
		{"query in name", "pkgbase = a\npkgver = 1\npkgrel = 1\npkgname = a?x=1\n", nil, "", true},
		{"hyphen in pkgver", "pkgbase = a\npkgver = 1-2\npkgrel = 1\npkgname = a\n", nil, "", true},
		{"colon in pkgver", "pkgbase = a\npkgver = 1:2\npkgrel = 1\npkgname = a\n", nil, "", true},
		{"slash in pkgver", "pkgbase = a\npkgver = 1/../2\npkgrel = 1\npkgname = a\n", nil, "", true},
		{"letters in pkgrel", "pkgbase = a\npkgver = 1\npkgrel = 1a\npkgname = a\n", nil, "", true},
		{"negative epoch", "pkgbase = a\npkgver = 1\npkgrel = 1\nepoch = -1\npkgname = a\n", nil, "", true},
		{"leading dash name", "pkgbase = -a\npkgver = 1\npkgrel = 1\npkgname = a\n", nil, "", true},
		{"too large", "pkgbase = a\n" + strings.Repeat("#\n", job.MaxSrcInfo/2+1), nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := job.ParseSrcInfo(strings.NewReader(tc.in))
			if tc.err {
				if err == nil || !errors.Is(err, job.ErrSrcInfo) {
					t.Fatalf("got %+v, %v; want an ErrSrcInfo", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if v := got.FullVersion(); v != tc.version {
				t.Errorf("FullVersion %q, want %q", v, tc.version)
			}
		})
	}
}

// FuzzParseSrcInfo checks that whatever a build sends, the parser does not
// panic and what it accepts is safe to put in a URL path segment and a
// file name.
func FuzzParseSrcInfo(f *testing.F) {
	for _, s := range []string{
		"pkgbase = a\npkgver = 1\npkgrel = 1\npkgname = a\n",
		"pkgbase = s\n\tpkgver = 3.1\n\tpkgrel = 2\n\tepoch = 1\n\tarch = any\npkgname = s-a\npkgname = s-b\n",
		"pkgbase = a\npkgver = 1\npkgrel = 1\npkgname = a/../b\n",
		"pkgbase=a\npkgver=1\npkgrel=1\npkgname=a\n",
		"\x00\n=\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := job.ParseSrcInfo(strings.NewReader(in))
		if err != nil {
			if !errors.Is(err, job.ErrSrcInfo) {
				t.Fatalf("error %v is not an ErrSrcInfo", err)
			}
			return
		}
		if len(s.Names) == 0 || s.Version == "" || s.Release == "" {
			t.Fatalf("accepted incomplete %+v", s)
		}
		for _, v := range append(append([]string{}, s.Names...), s.FullVersion(), s.Base) {
			if strings.ContainsAny(v, "/?#% \t\n\r\x00\\") || v == "." || v == ".." {
				t.Fatalf("accepted unsafe value %q", v)
			}
		}
	})
}
