package config

import (
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Secret is a string that never prints: fmt, JSON and YAML show
// "[redacted]". Reveal returns it.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string   { return s.mask() }
func (s Secret) GoString() string { return strconv.Quote(s.mask()) }

// Format makes every fmt verb print the mask.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' || (verb == 'v' && f.Flag('#')) {
		fmt.Fprint(f, strconv.Quote(s.mask()))
		return
	}
	fmt.Fprint(f, s.mask())
}

// MarshalJSON masks the secret (logrus's JSON formatter, /status).
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.mask())), nil }

// MarshalYAML masks the secret.
func (s Secret) MarshalYAML() (any, error) { return s.mask(), nil }

// LogValue masks the secret for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.mask()) }

func (s Secret) mask() string {
	if s == "" {
		return ""
	}
	return redacted
}

// Duration is a time.Duration written "90s", "5m", "1h30m". The
// reference agent's frequencies may also be bare numbers: seconds for
// polling_frequency, minutes for image_rebuild_frequency.
type Duration time.Duration

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// parseDuration parses a duration; unit ("s", "m") is the unit of a bare
// number, "" when a unit is required.
func parseDuration(s, unit string) (Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		var u time.Duration
		switch unit {
		case "s":
			u = time.Second
		case "m":
			u = time.Minute
		default:
			if n != 0 {
				return 0, fmt.Errorf("%q needs a unit, e.g. %ds", s, n)
			}
		}
		if n < 0 || (u > 0 && n > math.MaxInt64/int64(u)) {
			return 0, fmt.Errorf("%q out of range", s)
		}
		return Duration(time.Duration(n) * u), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 90s, 5m, 1h30m)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return Duration(d), nil
}

// Size is a number of bytes written "512M", "4GiB", "1.5G" or "1073741824".
// K, M, G, T and KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB
// powers of 1000. -1 means unlimited where a key allows it.
type Size int64

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(i?[bB]?)$`)

func parseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	if s == "-1" || strings.EqualFold(s, "unlimited") {
		return -1, nil
	}
	m := sizeRE.FindStringSubmatch(s)
	if m == nil || (m[3] == "i") || (m[2] == "" && strings.HasPrefix(m[3], "i")) {
		return 0, fmt.Errorf("%q is not a size (e.g. 512M, 4GiB)", s)
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size (e.g. 512M, 4GiB)", s)
	}
	base := 1024.0
	if m[3] == "B" || m[3] == "b" {
		if m[2] != "" {
			base = 1000 // KB, MB, GB, TB
		}
	}
	mult := 1.0
	if m[2] != "" {
		mult = math.Pow(base, float64(strings.Index("kmgt", strings.ToLower(m[2]))+1))
	}
	v := f * mult
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("%q out of range", s)
	}
	return Size(v), nil
}

func (s Size) String() string {
	switch {
	case s < 0:
		return "unlimited"
	case s == 0:
		return "0"
	}
	for _, u := range []struct {
		n    int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if int64(s)%u.n == 0 {
			return strconv.FormatInt(int64(s)/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalYAML writes the size as a string.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }
