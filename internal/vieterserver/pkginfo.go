package vieterserver

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// PkgInfo is what a package's .PKGINFO says about it.
type PkgInfo struct {
	Name, Base, Version, Desc, URL, Arch, Packager string
	BuildDate, Size                                int64
	Licenses, Groups, Depends, MakeDepends         []string
	CheckDepends, OptDepends, Provides, Conflicts  []string
	Replaces, Backup                               []string
}

const maxPkgInfo = 1 << 20

var (
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicGzip = []byte{0x1f, 0x8b}
	magicXz   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicBz2  = []byte("BZh")
)

// decompress returns a reader of the tar inside a package file.
func decompress(data []byte) (io.Reader, func(), error) {
	switch {
	case bytes.HasPrefix(data, magicZstd):
		d, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	case bytes.HasPrefix(data, magicGzip):
		z, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, nil, err
		}
		return z, func() { _ = z.Close() }, nil
	case bytes.HasPrefix(data, magicXz):
		return nil, nil, errors.New("xz-compressed packages are not supported by the test server")
	case bytes.HasPrefix(data, magicBz2):
		return nil, nil, errors.New("bzip2-compressed packages are not supported by the test server")
	case len(data) > 262 && string(data[257:262]) == "ustar":
		return bytes.NewReader(data), func() {}, nil
	}
	return nil, nil, errors.New("unknown package compression")
}

// pkgFile is a read package: its metadata, file list and checksums.
type pkgFile struct {
	info   PkgInfo
	files  []string
	sha256 string
	md5    string
	size   int64
}

// readPackage reads a package archive's .PKGINFO and file list.
func readPackage(data []byte) (*pkgFile, error) {
	r, closeFn, err := decompress(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPackage, err)
	}
	defer closeFn()
	tr := tar.NewReader(r)
	var (
		info  *PkgInfo
		files []string
	)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: reading tar: %w", ErrBadPackage, err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if name == ".PKGINFO" {
			b, err := io.ReadAll(io.LimitReader(tr, maxPkgInfo))
			if err != nil {
				return nil, fmt.Errorf("%w: reading .PKGINFO: %w", ErrBadPackage, err)
			}
			pi, err := parsePkgInfo(b)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBadPackage, err)
			}
			info = pi
			continue
		}
		if name == "" || strings.HasPrefix(name, ".") {
			continue // .BUILDINFO, .MTREE, .INSTALL, .CHANGELOG
		}
		clean := path.Clean("/" + name)[1:]
		if clean == "" {
			continue
		}
		if h.Typeflag == tar.TypeDir {
			clean += "/"
		}
		files = append(files, clean)
	}
	if info == nil {
		return nil, fmt.Errorf("%w: no .PKGINFO", ErrBadPackage)
	}
	sort.Strings(files)
	sum := sha256.Sum256(data)
	m := md5.Sum(data)
	return &pkgFile{info: *info, files: files, sha256: hex.EncodeToString(sum[:]),
		md5: hex.EncodeToString(m[:]), size: int64(len(data))}, nil
}

// parsePkgInfo parses "key = value" lines. Every field is untrusted.
func parsePkgInfo(b []byte) (*PkgInfo, error) {
	var p PkgInfo
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), maxPkgInfo)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "pkgname":
			p.Name = v
		case "pkgbase":
			p.Base = v
		case "pkgver":
			p.Version = v
		case "pkgdesc":
			p.Desc = v
		case "url":
			p.URL = v
		case "arch":
			p.Arch = v
		case "packager":
			p.Packager = v
		case "builddate":
			p.BuildDate, _ = strconv.ParseInt(v, 10, 64)
		case "size":
			p.Size, _ = strconv.ParseInt(v, 10, 64)
		case "license":
			p.Licenses = append(p.Licenses, v)
		case "group":
			p.Groups = append(p.Groups, v)
		case "depend":
			p.Depends = append(p.Depends, v)
		case "makedepend":
			p.MakeDepends = append(p.MakeDepends, v)
		case "checkdepend":
			p.CheckDepends = append(p.CheckDepends, v)
		case "optdepend":
			p.OptDepends = append(p.OptDepends, v)
		case "provides":
			p.Provides = append(p.Provides, v)
		case "conflict":
			p.Conflicts = append(p.Conflicts, v)
		case "replaces":
			p.Replaces = append(p.Replaces, v)
		case "backup":
			p.Backup = append(p.Backup, v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading .PKGINFO: %w", err)
	}
	if !validPkgName(p.Name) {
		return nil, fmt.Errorf("invalid pkgname %q", p.Name)
	}
	if !validVersion(p.Version) {
		return nil, fmt.Errorf("invalid pkgver %q", p.Version)
	}
	if !validName(p.Arch) {
		return nil, fmt.Errorf("invalid arch %q", p.Arch)
	}
	if p.Base == "" {
		p.Base = p.Name
	}
	if !validPkgName(p.Base) {
		return nil, fmt.Errorf("invalid pkgbase %q", p.Base)
	}
	return &p, nil
}

// validPkgName follows makepkg's rules for pkgname.
func validPkgName(s string) bool {
	if s == "" || len(s) > 255 || s[0] == '-' || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) && !(c >= 'A' && c <= 'Z')) && !strings.ContainsRune("@._+-", rune(c)) {
			return false
		}
	}
	return true
}

// validVersion accepts [epoch:]pkgver-pkgrel with makepkg's characters.
func validVersion(s string) bool {
	if s == "" || len(s) > 255 || !strings.Contains(s, "-") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && !strings.ContainsRune("._+:~-", rune(c)) {
			return false
		}
	}
	return true
}

// desc renders the repo-add "desc" entry of a package.
func (p *pkgFile) desc(filename string) []byte {
	var b bytes.Buffer
	section := func(key string, vals ...string) {
		var kept []string
		for _, v := range vals {
			if v != "" {
				kept = append(kept, v)
			}
		}
		if len(kept) == 0 {
			return
		}
		fmt.Fprintf(&b, "%%%s%%\n", key)
		for _, v := range kept {
			b.WriteString(v)
			b.WriteByte('\n')
		}
		b.WriteByte('\n')
	}
	i := p.info
	section("FILENAME", filename)
	section("NAME", i.Name)
	section("BASE", i.Base)
	section("VERSION", i.Version)
	section("DESC", i.Desc)
	section("GROUPS", i.Groups...)
	section("CSIZE", strconv.FormatInt(p.size, 10))
	section("ISIZE", strconv.FormatInt(i.Size, 10))
	section("MD5SUM", p.md5)
	section("SHA256SUM", p.sha256)
	section("URL", i.URL)
	section("LICENSE", i.Licenses...)
	section("ARCH", i.Arch)
	section("BUILDDATE", strconv.FormatInt(i.BuildDate, 10))
	section("PACKAGER", i.Packager)
	section("REPLACES", i.Replaces...)
	section("CONFLICTS", i.Conflicts...)
	section("PROVIDES", i.Provides...)
	section("DEPENDS", i.Depends...)
	section("OPTDEPENDS", i.OptDepends...)
	section("MAKEDEPENDS", i.MakeDepends...)
	section("CHECKDEPENDS", i.CheckDepends...)
	return b.Bytes()
}

// filesEntry renders the "files" entry of a package.
func (p *pkgFile) filesEntry() []byte {
	var b bytes.Buffer
	b.WriteString("%FILES%\n")
	for _, f := range p.files {
		b.WriteString(f)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes()
}
