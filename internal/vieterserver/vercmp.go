package vieterserver

import "strings"

// VerCmp compares two Pacman versions ([epoch:]pkgver[-pkgrel]) the way
// pacman's vercmp does: it returns -1, 0 or 1.
func VerCmp(a, b string) int {
	if a == b {
		return 0
	}
	e1, v1, r1 := parseEVR(a)
	e2, v2, r2 := parseEVR(b)
	if c := rpmVerCmp(e1, e2); c != 0 {
		return c
	}
	c := rpmVerCmp(v1, v2)
	if c == 0 && r1 != "" && r2 != "" {
		c = rpmVerCmp(r1, r2)
	}
	return c
}

// parseEVR splits epoch, version and release; a missing epoch is "0" and a
// missing release is "".
func parseEVR(s string) (epoch, version, release string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	epoch, version = "0", s
	if i < len(s) && s[i] == ':' {
		if i > 0 {
			epoch = s[:i]
		}
		version = s[i+1:]
	}
	if j := strings.LastIndexByte(version, '-'); j >= 0 {
		version, release = version[:j], version[j+1:]
	}
	return epoch, version, release
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }

// rpmVerCmp is the segment-wise comparison pacman inherited from rpm.
func rpmVerCmp(a, b string) int {
	if a == b {
		return 0
	}
	one, two := 0, 0
	for one < len(a) && two < len(b) {
		s1, s2 := one, two
		for one < len(a) && !isAlnum(a[one]) {
			one++
		}
		for two < len(b) && !isAlnum(b[two]) {
			two++
		}
		if one >= len(a) || two >= len(b) {
			break
		}
		// Separators of different lengths: the longer one is newer.
		if one-s1 != two-s2 {
			if one-s1 < two-s2 {
				return -1
			}
			return 1
		}
		p1, p2 := one, two
		isNum := isDigit(a[p1])
		class := isAlpha
		if isNum {
			class = isDigit
		}
		for p1 < len(a) && class(a[p1]) {
			p1++
		}
		for p2 < len(b) && class(b[p2]) {
			p2++
		}
		seg1, seg2 := a[one:p1], b[two:p2]
		if seg2 == "" {
			// Numeric segments are newer than alphabetic ones.
			if isNum {
				return 1
			}
			return -1
		}
		if isNum {
			seg1 = strings.TrimLeft(seg1, "0")
			seg2 = strings.TrimLeft(seg2, "0")
			if len(seg1) != len(seg2) {
				if len(seg1) > len(seg2) {
					return 1
				}
				return -1
			}
		}
		if c := strings.Compare(seg1, seg2); c != 0 {
			return c
		}
		one, two = p1, p2
	}
	if one >= len(a) && two >= len(b) {
		return 0
	}
	// A remaining alphabetic part never beats an empty one.
	if (one >= len(a) && !isAlpha(b[two])) || (one < len(a) && isAlpha(a[one])) {
		return -1
	}
	return 1
}
