package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/vieter"
)

// Config is agent.yaml. Every key has a default (see defaultConfig and
// docs/configuration.md) except address and api_key. Load reads it.
type Config struct {
	// The reference agent's keys.
	Address               string   `yaml:"address"`
	APIKey                Secret   `yaml:"api_key"`
	Arch                  string   `yaml:"arch"`
	DataDir               string   `yaml:"data_dir"`
	MaxConcurrentBuilds   int      `yaml:"max_concurrent_builds"`
	PollingFrequency      Duration `yaml:"polling_frequency" unit:"s"`
	ImageRebuildFrequency Duration `yaml:"image_rebuild_frequency" unit:"m"`
	LogLevel              string   `yaml:"log_level"`

	// vagent's own keys.
	AgentName      string       `yaml:"agent_name"`
	LogFormat      string       `yaml:"log_format"`
	LogFile        string       `yaml:"log_file"`
	MetricsAddress string       `yaml:"metrics_address"`
	BuildTimeout   Duration     `yaml:"build_timeout"`
	ShutdownGrace  Duration     `yaml:"shutdown_grace"`
	DeliverTimeout Duration     `yaml:"deliver_timeout"`
	RequestTimeout Duration     `yaml:"request_timeout"`
	UploadTimeout  Duration     `yaml:"upload_timeout"`
	Fsync          bool         `yaml:"fsync"`
	IDRange        IDRange      `yaml:"id_range"`
	BuildLimits    BuildLimits  `yaml:"build_limits"`
	PacmanCache    PacmanCache  `yaml:"pacman_cache"`
	BuilderPkgs    []string     `yaml:"builder_packages"`
	PacmanMirrors  []string     `yaml:"pacman_mirrors"`
	Mirrors        []string     `yaml:"mirrors"` // deprecated name of pacman_mirrors
	PacmanRepos    []PacmanRepo `yaml:"pacman_repos"`
	Registries     Registries   `yaml:"registries"`
	BuildNetwork   BuildNetwork `yaml:"build_network"`

	// Warnings are what LoadConfig found suspicious but valid (secrets
	// readable by other users), for the caller to log.
	Warnings []string `yaml:"-" json:"-"`
}

// IDRange is the host id range mapped into build user namespaces.
type IDRange struct {
	// Base 0 (unset) means the data dir's own range: recorded there, or
	// picked free (resolveIDRange).
	Base uint32 `yaml:"base"`
	Size uint32 `yaml:"size"`
	// AllowConflicts lets `vagent run` start although host users, groups
	// or subordinate id entries use ids of the range.
	AllowConflicts bool `yaml:"allow_conflicts"`
}

// BuildLimits are the cgroup limits of one build.
type BuildLimits struct {
	Memory     Size  `yaml:"memory"`
	MemorySwap Size  `yaml:"memory_swap"`
	Pids       int64 `yaml:"pids"`
	// PidsSet: pids comes from the file or a variable, not the default.
	// A rootless agent without a delegated cgroup drops the default
	// (nothing can apply it) but refuses a configured one.
	PidsSet   bool    `yaml:"-" json:"-"`
	CPUs      float64 `yaml:"cpus"`
	CPUWeight uint64  `yaml:"cpu_weight"`
	// Tmp is the size of the tmpfs on /tmp (memory, charged to Memory).
	Tmp Size `yaml:"tmp"`
	// Disk bounds what a build adds to the disk (sandbox.Limits.Disk).
	Disk Size `yaml:"disk"`
	// Log caps a build's log (poll.WithLogLimit).
	Log Size `yaml:"log"`
}

// BuildNetwork is the network of builds and builder setups.
type BuildNetwork struct {
	// Mode is isolated (a network namespace per build), host (the host's
	// network: unsafe) or none (loopback only).
	Mode string `yaml:"mode"`
	// OfflineBuild runs build() and package() without network.
	OfflineBuild bool `yaml:"offline_build"`
	// Forward lists further host:port endpoints builds reach (a local git
	// mirror on the host's loopback).
	Forward []string `yaml:"forward"`
	// Deny lists further destinations builds are refused (CIDRs or
	// addresses).
	Deny []string `yaml:"deny"`
}

// PacmanCache is the package caches of the targets' builds.
type PacmanCache struct {
	Enabled bool   `yaml:"enabled"`
	Dir     string `yaml:"dir"`
	// MaxSize bounds the caches together (job.WithCacheMaxSize).
	MaxSize Size `yaml:"max_size"`
	// Sources keeps makepkg's sources in each target's cache
	// (job.WithSourceCache).
	Sources bool `yaml:"sources"`
}

// PacmanRepo is an extra Pacman repository of builders and builds.
type PacmanRepo struct {
	Name     string   `yaml:"name"`
	Servers  []string `yaml:"servers"`
	SigLevel string   `yaml:"sig_level"`
}

// Registries configures how base images are pulled.
type Registries struct {
	Mirrors      map[string][]string   `yaml:"mirrors"`
	Insecure     []string              `yaml:"insecure"`
	CAFile       string                `yaml:"ca_file"`
	DockerConfig string                `yaml:"docker_config"`
	Credentials  map[string]Credential `yaml:"credentials"`
}

// Credential is a registry login.
type Credential struct {
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

func defaultConfig() Config {
	return Config{
		Arch:                  pacman.Arch(runtime.GOARCH),
		DataDir:               defaultDataDir,
		MaxConcurrentBuilds:   1,
		PollingFrequency:      Duration(30 * time.Second),
		ImageRebuildFrequency: Duration(1440 * time.Minute),
		LogLevel:              "INFO",
		AgentName:             defaultAgentName(),
		LogFormat:             "text",
		BuildTimeout:          Duration(time.Hour),
		ShutdownGrace:         Duration(5 * time.Minute),
		DeliverTimeout:        Duration(30 * time.Second),
		RequestTimeout:        Duration(time.Minute),
		UploadTimeout:         Duration(10 * time.Minute),
		Fsync:                 true,
		IDRange:               IDRange{Size: 65536},
		BuildLimits:           BuildLimits{Pids: 4096, Tmp: sandbox.DefaultTmpSize, Log: poll.DefaultLogLimit},
		PacmanCache:           PacmanCache{Enabled: true, MaxSize: job.DefaultCacheMaxSize},
		BuildNetwork:          BuildNetwork{Mode: "isolated"},
		BuilderPkgs:           []string{"base-devel", "git"},
	}
}

// defaultAgentName is the host's name, or "vagent" when it has none that
// makes an agent name.
func defaultAgentName() string {
	h, err := os.Hostname()
	if err != nil || checkAgentName(h) != nil {
		return "vagent"
	}
	return h
}

// maxAgentName bounds agent_name (poll's bound of names in log headers).
const maxAgentName = 64

// checkAgentName checks an agent_name: printable, at most 64 bytes.
func checkAgentName(s string) error {
	if s == "" || strings.TrimSpace(s) != s || len(s) > maxAgentName || !utf8.ValidString(s) ||
		strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("must be 1-%d printable characters without leading or trailing space, got %q", maxAgentName, excerptValue(s))
	}
	return nil
}

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

// String prints the configuration with its secrets masked.
func (c *Config) String() string {
	type plain Config // without this method
	return fmt.Sprintf("%+v", plain(*c))
}

// LogValue is the configuration for log/slog, secrets masked.
func (c *Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

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

var (
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[Size]()
)

// configError is an invalid configuration value, located by the file and
// line or the environment variable it came from.
type configError struct {
	where string // "agent.yaml:7", "VIETER_ARCH", "agent.yaml"
	key   string // "build_limits.memory"
	msg   string
}

func (e *configError) Error() string {
	if e.key == "" {
		return e.where + ": " + e.msg
	}
	return e.where + ": " + e.key + ": " + e.msg
}

// loader decodes a configuration and remembers where each key was set.
type loader struct {
	file     string
	where    map[string]string // key path → "file:line" or env var
	nodes    int
	errs     []error
	warnings []string
}

// maxErrors bounds the errors reported at once.
const maxErrors = 20

func (l *loader) fail(where, key, format string, args ...any) {
	switch {
	case len(l.errs) < maxErrors:
		l.errs = append(l.errs, &configError{where: where, key: key, msg: fmt.Sprintf(format, args...)})
	case len(l.errs) == maxErrors:
		l.errs = append(l.errs, &configError{where: l.file, msg: "too many errors"})
	}
}

// maxNodes bounds the YAML nodes visited, aliases included.
const maxNodes = 100000

// LoadConfig reads the configuration file at path (none if path is ""),
// applies the environment's VIETER_* overrides and checks every value.
// Errors name the file and line, or the variable, and the key.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("reading configuration: %w", err)
		}
	}
	name := path // errors name the file as given
	if path == "" {
		name = "environment"
	}
	c, err := parseConfig(name, data, getenv)
	if err != nil {
		return nil, err
	}
	if path != "" {
		c.Warnings = append(c.Warnings, secretModeWarnings(path)...)
	}
	if c.Registries.DockerConfig != "" {
		c.Warnings = append(c.Warnings, secretModeWarnings(c.Registries.DockerConfig)...)
	}
	for _, cr := range c.Registries.Credentials {
		if cr.PasswordFile != "" {
			c.Warnings = append(c.Warnings, secretModeWarnings(cr.PasswordFile)...)
		}
	}
	return c, nil
}

// secretModeWarnings warns about files holding secrets (the configuration,
// *_FILE secrets) that other users may read.
func secretModeWarnings(paths ...string) []string {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().Perm()&0o044 != 0 {
			out = append(out, fmt.Sprintf("%s is readable by group or others (mode %04o): it may hold secrets, make it 0600", p, fi.Mode().Perm()))
		}
	}
	return out
}

// checkIDRange refuses an id range that host users, groups or subordinate
// id entries use (conflicts, from sandbox.IDConflicts) unless
// id_range.allow_conflicts is set.
func (c *Config) checkIDRange(conflicts []string) error {
	if len(conflicts) == 0 || c.IDRange.AllowConflicts {
		return nil
	}
	end := uint64(c.IDRange.Base) + uint64(c.IDRange.Size) - 1
	return &configError{where: "id_range", msg: fmt.Sprintf("host ids %d-%d are in use: %s; remove id_range.base to let vagent pick a free range, "+
		"choose another, or set id_range.allow_conflicts: true to accept it",
		c.IDRange.Base, end, strings.Join(conflicts, ", "))}
}

// parseConfig parses data (the contents of file) with the overrides of
// getenv.
func parseConfig(file string, data []byte, getenv func(string) string) (*Config, error) {
	if file == "" || file == "." {
		file = "agent.yaml"
	}
	c := defaultConfig()
	l := &loader{file: file, where: map[string]string{}}
	if line, key, ok := looksLikeTOML(data); ok {
		return nil, &configError{where: fmt.Sprintf("%s:%d", file, line), msg: fmt.Sprintf("this looks like TOML (%s = …), the reference agent's format: "+
			"vagent reads YAML, one \"key: value\" per line (%s: …); agent.example.yaml has every key", key, key)}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			return nil, &configError{where: file + ":" + m[1], msg: m[2]}
		}
		return nil, &configError{where: file, msg: msg}
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			// an empty document: defaults only
		} else {
			l.decode(root, reflect.ValueOf(&c).Elem(), "", "")
		}
	}
	// Every error at once: a value that could not be decoded keeps its
	// default, which validates.
	l.env(reflect.ValueOf(&c).Elem(), "", getenv)
	l.validate(&c)
	_, c.BuildLimits.PidsSet = l.where["build_limits.pids"]
	if len(l.errs) > 0 {
		sort.SliceStable(l.errs, func(i, j int) bool { return errLine(l.errs[i]) < errLine(l.errs[j]) })
		return nil, errors.Join(l.errs...)
	}
	c.Warnings = l.warnings
	return &c, nil
}

var (
	tomlAssignRE = regexp.MustCompile(`^\s*([A-Za-z0-9_]+)\s*=\s*\S`)
	yamlKeyRE    = regexp.MustCompile(`^\s*(- )?[A-Za-z0-9_."']+\s*:(\s|$)`)
)

// looksLikeTOML tells a TOML file (the reference agent's agent.toml:
// key = "value") from YAML: an assignment line and no YAML key. It
// returns the first assignment's line and key.
func looksLikeTOML(data []byte) (line int, key string, ok bool) {
	for i, l := range strings.Split(string(data), "\n") {
		if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if yamlKeyRE.MatchString(l) {
			return 0, "", false
		}
		if m := tomlAssignRE.FindStringSubmatch(l); m != nil && key == "" {
			line, key = i+1, m[1]
		}
	}
	return line, key, key != ""
}

// errLine orders errors: by line in the file, then the file's errors
// without a line, then the environment's.
func errLine(err error) int {
	var ce *configError
	if !errors.As(err, &ce) {
		return math.MaxInt
	}
	if strings.HasPrefix(ce.where, "VIETER_") {
		return math.MaxInt - 1
	}
	_, line, ok := strings.Cut(ce.where, ":")
	if !ok {
		return math.MaxInt - 2
	}
	n, _ := strconv.Atoi(line)
	return n
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the yaml keys of struct type t to field indexes.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" {
			m[name] = f
		}
	}
	return m
}

// decode sets v from n, reporting unknown keys and bad values at their
// line. unit is the "unit" tag of a Duration field.
func (l *loader) decode(n *yaml.Node, v reflect.Value, path, unit string) {
	if l.nodes++; l.nodes > maxNodes {
		if l.nodes == maxNodes+1 {
			l.fail(l.at(n), path, "document too large")
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	where := l.at(n)
	if path != "" {
		l.where[path] = where
	}
	switch {
	case v.Type() == durationType:
		s, ok := l.scalar(n, path)
		if !ok {
			return
		}
		d, err := parseDuration(s, unit)
		if err != nil {
			l.fail(where, path, "%v", err)
			return
		}
		v.Set(reflect.ValueOf(d))
	case v.Type() == sizeType:
		s, ok := l.scalar(n, path)
		if !ok {
			return
		}
		sz, err := parseSize(s)
		if err != nil {
			l.fail(where, path, "%v", err)
			return
		}
		v.Set(reflect.ValueOf(sz))
	case v.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			l.fail(where, path, "must be a mapping")
			return
		}
		fields := yamlFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := join(path, k.Value)
			f, ok := fields[k.Value]
			switch {
			case k.Kind != yaml.ScalarNode:
				l.fail(l.at(k), path, "keys must be strings")
			case !ok:
				names := map[string]bool{}
				for n := range fields {
					names[n] = true
				}
				if s := nearest(k.Value, names); s != "" {
					l.fail(l.at(k), key, "unknown key; did you mean %s?", join(path, s))
				} else {
					l.fail(l.at(k), key, "unknown key")
				}
			case seen[k.Value]:
				l.fail(l.at(k), key, "set twice")
			default:
				seen[k.Value] = true
				if val.Kind == yaml.ScalarNode && val.Tag == "!!null" {
					l.where[key] = l.at(val)
					continue // "key:" with no value keeps the default
				}
				l.decode(val, v.FieldByIndex(f.Index), key, f.Tag.Get("unit"))
			}
		}
	case v.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			l.fail(where, path, "must be a mapping")
			return
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Value == "" {
				l.fail(l.at(k), path, "keys must be non-empty strings")
				continue
			}
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				l.fail(l.at(k), join(path, k.Value), "set twice")
				continue
			}
			e := reflect.New(v.Type().Elem()).Elem()
			l.decode(val, e, join(path, k.Value), "")
			m.SetMapIndex(reflect.ValueOf(k.Value), e)
		}
		v.Set(m)
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			l.fail(where, path, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, e := range n.Content {
			l.decode(e, s.Index(i), fmt.Sprintf("%s[%d]", path, i), "")
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			l.fail(where, path, "must be a single value")
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			l.fail(where, path, "%s", typeError(n, v))
		}
	}
}

// typeError describes a scalar that does not fit v's type.
func typeError(n *yaml.Node, v reflect.Value) string {
	want := map[reflect.Kind]string{reflect.Bool: "true or false", reflect.Int: "an integer", reflect.Int64: "an integer",
		reflect.Uint32: "a non-negative integer", reflect.Uint64: "a non-negative integer", reflect.Float64: "a number",
		reflect.String: "a string"}[v.Kind()]
	if want == "" {
		want = "a " + v.Kind().String()
	}
	return fmt.Sprintf("must be %s, got %q", want, excerptValue(n.Value))
}

func excerptValue(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func (l *loader) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		l.fail(l.at(n), path, "must be a single value")
		return "", false
	}
	return n.Value, true
}

func (l *loader) at(n *yaml.Node) string {
	if n.Line == 0 {
		return l.file
	}
	return l.file + ":" + strconv.Itoa(n.Line)
}

// envName is the variable that overrides the key at path.
func envName(path string) string {
	return "VIETER_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// env applies VIETER_<KEY> and VIETER_<KEY>_FILE to every scalar key and
// list of strings (comma-separated), nested ones joined with "_"
// (VIETER_BUILD_LIMITS_MEMORY). Maps and lists of mappings are set in the
// file only.
func (l *loader) env(v reflect.Value, path string, getenv func(string) string) {
	for name, f := range yamlFields(v.Type()) {
		key := join(path, name)
		fv := v.FieldByIndex(f.Index)
		ft := f.Type
		if ft.Kind() == reflect.Struct && ft != durationType {
			l.env(fv, key, getenv)
			continue
		}
		if ft.Kind() == reflect.Map || (ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.String) {
			continue
		}
		ev := envName(key)
		val, fromFile := getenv(ev), getenv(ev+"_FILE")
		switch {
		case val != "" && fromFile != "":
			l.fail(ev, "", "set together with %s_FILE: use one", ev)
			continue
		case fromFile != "":
			b, err := os.ReadFile(fromFile)
			if err != nil {
				l.fail(ev+"_FILE", "", "%v", err)
				continue
			}
			l.warnings = append(l.warnings, secretModeWarnings(fromFile)...)
			val, ev = strings.TrimRight(string(b), "\r\n"), ev+"_FILE"
			if val == "" {
				l.fail(ev, "", "%s is empty", fromFile)
				continue
			}
		case val == "":
			continue
		}
		var n *yaml.Node
		if ft.Kind() == reflect.Slice {
			n = &yaml.Node{Kind: yaml.SequenceNode}
			for _, s := range strings.Split(val, ",") {
				if s = strings.TrimSpace(s); s != "" {
					n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s})
				}
			}
		} else {
			n = &yaml.Node{Kind: yaml.ScalarNode, Value: val}
			if ft.Kind() == reflect.String {
				n.Tag = "!!str"
			}
		}
		// Errors and the source name the variable.
		saved := l.file
		l.file = ev
		l.decode(n, fv, key, f.Tag.Get("unit"))
		l.file = saved
	}
}

var yamlLineRE = regexp.MustCompile(`^line ([0-9]+): (.*)$`)

var pkgRE = regexp.MustCompile(`^([a-z0-9@._+-]+/)?[a-z0-9@._+-]+$`)

// validate checks the values that decoding could not.
func (l *loader) validate(c *Config) {
	// where locates key, or the nearest enclosing key that was set.
	where := func(key string) string {
		for key != "" {
			if w, ok := l.where[key]; ok {
				return w
			}
			i := strings.LastIndexAny(key, ".[")
			if i < 0 {
				break
			}
			key = key[:i]
		}
		return l.file
	}
	check := func(ok bool, key, format string, args ...any) bool {
		if !ok {
			l.fail(where(key), key, format, args...)
		}
		return ok
	}
	if check(c.Address != "", "address", "required (the Vieter server's URL; or %s)", envName("address")) {
		u, err := url.Parse(c.Address)
		if check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "", "address", "must be an http or https URL, got %q", excerptValue(c.Address)) {
			check(u.User == nil, "address", "must not contain credentials")
			check(u.RawQuery == "" && u.Fragment == "", "address", "must not have a query or fragment")
		}
	}
	check(c.APIKey != "", "api_key", "required (or %s, or %s_FILE)", envName("api_key"), envName("api_key"))
	check(!strings.ContainsAny(c.APIKey.Reveal(), "\r\n\x00"), "api_key", "contains a line break")
	check(pacman.ValidateArch(c.Arch) == nil, "arch", "must be a Pacman architecture name such as x86_64, got %q", excerptValue(c.Arch))
	check(filepath.IsAbs(c.DataDir), "data_dir", "must be an absolute path, got %q", excerptValue(c.DataDir))
	check(c.MaxConcurrentBuilds >= 1 && c.MaxConcurrentBuilds <= 1024, "max_concurrent_builds", "must be ≥ 1 and ≤ 1024, got %d", c.MaxConcurrentBuilds)
	for _, d := range []struct {
		key string
		v   Duration
		min time.Duration
	}{
		{"polling_frequency", c.PollingFrequency, time.Second},
		{"image_rebuild_frequency", c.ImageRebuildFrequency, time.Minute},
		{"build_timeout", c.BuildTimeout, time.Second},
		{"deliver_timeout", c.DeliverTimeout, time.Second},
		{"request_timeout", c.RequestTimeout, time.Second},
		{"upload_timeout", c.UploadTimeout, time.Second},
	} {
		check(d.v.D() >= d.min, d.key, "must be at least %v, got %v", d.min, d.v)
	}
	if _, err := logLevel(c.LogLevel); err != nil {
		check(false, "log_level", "%v", err)
	}
	if err := checkAgentName(c.AgentName); err != nil {
		check(false, "agent_name", "%v", err)
	}
	check(c.LogFormat == "text" || c.LogFormat == "json", "log_format", "must be text or json, got %q", excerptValue(c.LogFormat))
	check(c.LogFile == "" || c.LogFile == "-" || filepath.IsAbs(c.LogFile), "log_file", "must be an absolute path or -, got %q", excerptValue(c.LogFile))
	if c.MetricsAddress != "" {
		_, port, err := net.SplitHostPort(c.MetricsAddress)
		p, perr := strconv.ParseUint(port, 10, 16)
		check(err == nil && perr == nil && (p > 0 || port == "0"), "metrics_address", "must be host:port (e.g. 127.0.0.1:9100 or :9100), got %q", excerptValue(c.MetricsAddress))
	}
	if _, set := l.where["id_range.base"]; set {
		check(c.IDRange.Base >= 1, "id_range.base", "must be ≥ 1 (host id 0 is root), got %d; leave it out to let vagent pick a free range", c.IDRange.Base)
	}
	check(c.IDRange.Size >= 65536, "id_range.size", "must be ≥ 65536 (a build needs every 16-bit id), got %d", c.IDRange.Size)
	check(uint64(c.IDRange.Base)+uint64(c.IDRange.Size) <= math.MaxUint32, "id_range.size", "base + size must be < 2^32")
	bl := c.BuildLimits
	check(bl.Memory >= 0, "build_limits.memory", "must be a size or 0 (no limit), got %v", bl.Memory)
	check(bl.Memory == 0 || bl.Memory >= 16<<20, "build_limits.memory", "must be at least 16MiB, got %v", bl.Memory)
	check(bl.MemorySwap >= -1, "build_limits.memory_swap", "must be a size, 0 or -1")
	check(bl.MemorySwap == 0 || bl.Memory > 0, "build_limits.memory_swap", "needs build_limits.memory")
	check(bl.MemorySwap <= 0 || bl.MemorySwap >= bl.Memory, "build_limits.memory_swap", "is memory plus swap: must be ≥ memory (%v), got %v", bl.Memory, bl.MemorySwap)
	check(bl.Pids >= 0, "build_limits.pids", "must be ≥ 0 (0: no limit), got %d", bl.Pids)
	check(bl.CPUs >= 0 && !math.IsNaN(bl.CPUs) && !math.IsInf(bl.CPUs, 0) && bl.CPUs <= 1<<16, "build_limits.cpus", "must be a number of CPUs ≥ 0 (0: no limit), got %v", bl.CPUs)
	check(bl.CPUWeight <= 10000, "build_limits.cpu_weight", "must be 1–10000 or 0 (the default weight), got %d", bl.CPUWeight)
	check(bl.Tmp >= 1<<20, "build_limits.tmp", "must be a size of at least 1MiB, got %v", bl.Tmp)
	check(bl.Log >= 4<<10, "build_limits.log", "must be a size of at least 4KiB, got %v", bl.Log)
	check(bl.Disk == 0 || bl.Disk >= 64<<20, "build_limits.disk", "must be a size of at least 64MiB or 0 (no limit), got %v", bl.Disk)
	check(c.PacmanCache.MaxSize >= 0, "pacman_cache.max_size", "must be a size or 0 (no bound), got %v", c.PacmanCache.MaxSize)
	check(c.PacmanCache.Dir == "" || filepath.IsAbs(c.PacmanCache.Dir), "pacman_cache.dir", "must be an absolute path, got %q", excerptValue(c.PacmanCache.Dir))
	for i, p := range c.BuilderPkgs {
		check(pkgRE.MatchString(p), fmt.Sprintf("builder_packages[%d]", i), "not a package name: %q", excerptValue(p))
	}
	for i, m := range c.Mirrors {
		check(pacman.ValidateServer(m) == nil, fmt.Sprintf("mirrors[%d]", i), "must be an http, https or file URL, got %q", excerptValue(m))
	}
	check(len(c.Mirrors) == 0 || len(c.PacmanMirrors) == 0, "mirrors", "is the deprecated name of pacman_mirrors: set only pacman_mirrors")
	for i, m := range c.PacmanMirrors {
		check(pacman.ValidateServer(m) == nil, fmt.Sprintf("pacman_mirrors[%d]", i), "must be an http, https or file URL, got %q", excerptValue(m))
	}
	names := map[string]bool{}
	for i, r := range c.PacmanRepos {
		key := fmt.Sprintf("pacman_repos[%d]", i)
		check(pacman.ValidateName(r.Name) == nil, key+".name", "must be a repository name (a letter or digit, then letters, digits and ._+-; not options), got %q", excerptValue(r.Name))
		check(!names[r.Name], key+".name", "%q is listed twice", excerptValue(r.Name))
		names[r.Name] = true
		check(len(r.Servers) > 0, key+".servers", "needs at least one server")
		for j, s := range r.Servers {
			check(pacman.ValidateServer(s) == nil, fmt.Sprintf("%s.servers[%d]", key, j), "must be an http, https or file URL, got %q", excerptValue(s))
		}
		_, err := pacman.NormalizeSigLevel(r.SigLevel)
		check(err == nil, key+".sig_level", "must be Pacman SigLevel words (e.g. Optional TrustAll), got %q", excerptValue(r.SigLevel))
	}
	bn := c.BuildNetwork
	mode, err := sandbox.ParseNetworkMode(bn.Mode)
	check(err == nil, "build_network.mode", "must be isolated, host or none, got %q", excerptValue(bn.Mode))
	for i, f := range bn.Forward {
		_, _, err := sandbox.ParseForward(f)
		check(err == nil, fmt.Sprintf("build_network.forward[%d]", i), "must be host:port (e.g. 127.0.0.1:9418), got %q", excerptValue(f))
	}
	for i, d := range bn.Deny {
		_, err := parseDeny(d)
		check(err == nil, fmt.Sprintf("build_network.deny[%d]", i), "must be an address or a CIDR prefix (e.g. 10.0.0.0/8), got %q", excerptValue(d))
	}
	if err == nil {
		check(!bn.OfflineBuild || mode == sandbox.NetworkIsolated, "build_network.offline_build", "needs build_network.mode: isolated (the agent cuts an isolated network), not %s", mode)
		if mode != sandbox.NetworkIsolated && (len(bn.Forward) > 0 || len(bn.Deny) > 0) {
			l.warnings = append(l.warnings, fmt.Sprintf("build_network.forward and build_network.deny apply to the isolated network only: ignored with mode %s", mode))
		}
		if mode == sandbox.NetworkHost {
			l.warnings = append(l.warnings, "build_network.mode: host is unsafe: builds share the host's network namespace, "+
				"so they reach its loopback services (the agent's metrics, a local registry or Vieter server), its abstract unix sockets, "+
				"link-local addresses (cloud metadata), and can bind its ports; use isolated (the default)")
		}
	}
	rg := c.Registries
	for host, ms := range rg.Mirrors {
		check(validHost(host), "registries.mirrors."+host, "not a registry host")
		for i, m := range ms {
			check(m != "" && !strings.ContainsAny(m, " \t\r\n"), fmt.Sprintf("registries.mirrors.%s[%d]", host, i), "not a mirror: %q", excerptValue(m))
		}
	}
	for i, h := range rg.Insecure {
		check(validHost(h), fmt.Sprintf("registries.insecure[%d]", i), "not a registry host: %q", excerptValue(h))
	}
	check(rg.CAFile == "" || filepath.IsAbs(rg.CAFile), "registries.ca_file", "must be an absolute path")
	check(rg.DockerConfig == "" || filepath.IsAbs(rg.DockerConfig), "registries.docker_config", "must be an absolute path")
	for host, cr := range rg.Credentials {
		key := "registries.credentials." + host
		check(validHost(host), key, "not a registry host")
		check(cr.Username != "", key+".username", "required")
		check((cr.Password == "") != (cr.PasswordFile == ""), key, "needs password or password_file (one of them)")
		check(cr.PasswordFile == "" || filepath.IsAbs(cr.PasswordFile), key+".password_file", "must be an absolute path")
	}
}

// parseDeny parses a build_network.deny entry: a CIDR prefix, or an
// address (the prefix of that one address).
func parseDeny(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR prefix nor an address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func validHost(h string) bool {
	if h == "" || strings.ContainsAny(h, "/ \t\r\n@") {
		return false
	}
	host := h
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return false
		}
		host = hh
	}
	return host != ""
}

// logLevel parses log_level: FATAL, ERROR, WARN, INFO or DEBUG, in any case.
func logLevel(s string) (string, error) {
	switch u := strings.ToUpper(strings.TrimSpace(s)); u {
	case "FATAL", "ERROR", "WARN", "INFO", "DEBUG":
		return u, nil
	case "WARNING":
		return "WARN", nil
	}
	return "", fmt.Errorf("must be FATAL, ERROR, WARN, INFO or DEBUG, got %q", excerptValue(s))
}

// PollOptions returns the poll options of the configuration (without the
// logger and the observer, which the caller adds).
func (c *Config) PollOptions() []poll.Option {
	return []poll.Option{
		poll.WithArch(c.Arch),
		poll.WithDataDir(c.DataDir),
		poll.WithSlots(c.MaxConcurrentBuilds),
		poll.WithPollInterval(c.PollingFrequency.D()),
		poll.WithGracePeriod(c.ShutdownGrace.D()),
		poll.WithDeliverTimeout(c.DeliverTimeout.D()),
		poll.WithRequestTimeout(c.RequestTimeout.D()),
		poll.WithUploadTimeout(c.UploadTimeout.D()),
		poll.WithDefaultTimeout(c.BuildTimeout.D()),
		poll.WithFsync(c.Fsync),
		poll.WithLogLimit(int64(c.BuildLimits.Log)),
		poll.WithAgentName(c.AgentName),
		poll.WithVersion(version),
	}
}

// Client returns the Vieter client of the configuration: the agent's one
// client, shared by the poll loop and the builds.
func (c *Config) Client(opts ...vieter.Option) (*vieter.Client, error) {
	return vieter.NewClient(c.Address, c.APIKey.Reveal(), append([]vieter.Option{vieter.WithUserAgent("vagent/" + version)}, opts...)...)
}

// OCIOptions returns the registry options of the configuration. It reads
// the password files.
func (c *Config) OCIOptions() ([]oci.Option, error) {
	rg := c.Registries
	var opts []oci.Option
	for host, ms := range rg.Mirrors {
		opts = append(opts, oci.WithMirrors(host, ms...))
	}
	if len(rg.Insecure) > 0 {
		opts = append(opts, oci.WithInsecure(rg.Insecure...))
	}
	if rg.CAFile != "" {
		opts = append(opts, oci.WithCABundle(rg.CAFile))
	}
	if rg.DockerConfig != "" {
		opts = append(opts, oci.WithDockerConfig(rg.DockerConfig))
	}
	for host, cr := range rg.Credentials {
		pass := cr.Password.Reveal()
		if cr.PasswordFile != "" {
			b, err := os.ReadFile(cr.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("registries.credentials.%s.password_file: %w", host, err)
			}
			pass = strings.TrimRight(string(b), "\r\n")
		}
		opts = append(opts, oci.WithCredentials(host, cr.Username, pass))
	}
	return opts, nil
}

// Limits returns the build limits as sandbox limits.
func (c *Config) Limits() sandbox.Limits {
	bl := c.BuildLimits
	l := sandbox.Limits{Memory: int64(bl.Memory), MemorySwap: int64(bl.MemorySwap), Pids: bl.Pids, CPUWeight: bl.CPUWeight, CPUQuota: bl.CPUs, Disk: int64(bl.Disk)}
	if !bl.PidsSet && rootless() && sandbox.CgroupDelegated() != nil {
		l.Pids = 0 // the default, which nothing can apply here (warnUnlimited says so)
	}
	return l
}

// SandboxOptions returns the sandbox options of the configuration but the
// id range, which depends on the data dir too (resolveIDRange, openSandbox).
// Rootless, the id range is not the configuration's at all: builds map to
// the user's subordinate ids.
func (c *Config) SandboxOptions() []sandbox.Option {
	return []sandbox.Option{sandbox.WithDefaultLimits(c.Limits()),
		sandbox.WithTmpSize(int64(c.BuildLimits.Tmp)), sandbox.WithNetworkDeny(c.NetworkDeny()...)}
}

// NetworkMode is build_network.mode.
func (c *Config) NetworkMode() sandbox.NetworkMode {
	m, _ := sandbox.ParseNetworkMode(c.BuildNetwork.Mode)
	return m
}

// NetworkDeny is build_network.deny.
func (c *Config) NetworkDeny() []netip.Prefix {
	var out []netip.Prefix
	for _, d := range c.BuildNetwork.Deny {
		if p, err := parseDeny(d); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// BuildForwards are the endpoints builds reach besides the server (which
// the build package adds): build_network.forward, and the servers of
// pacman_mirrors and pacman_repos, which are in the builder image's
// pacman.conf.
func (c *Config) BuildForwards() []string {
	urls := append([]string(nil), c.pacmanMirrors()...)
	for _, r := range c.PacmanRepos {
		urls = append(urls, r.Servers...)
	}
	return sandbox.ForwardsFor(c.BuildNetwork.Forward, urls...)
}

// JobNetworkOptions are the network options of builds.
func (c *Config) JobNetworkOptions() []job.Option {
	return []job.Option{job.WithNetwork(c.NetworkMode(), c.BuildForwards()...), job.WithOfflineBuild(c.BuildNetwork.OfflineBuild)}
}

// setupNetwork is the network of builder setups: the host's when builds
// have it, isolated otherwise (also for mode none: a setup runs pacman
// -Syu from the configured mirrors, no job's code).
func (c *Config) setupNetwork() sandbox.NetworkMode {
	if c.NetworkMode() == sandbox.NetworkHost {
		return sandbox.NetworkHost
	}
	return sandbox.NetworkIsolated
}

// BuilderOptions returns the builder-image options of the configuration.
func (c *Config) BuilderOptions() []builder.Option {
	opts := []builder.Option{builder.WithMaxAge(c.ImageRebuildFrequency.D()), builder.WithPackages(c.BuilderPkgs...),
		builder.WithNetwork(c.setupNetwork(), c.BuildNetwork.Forward...)}
	if ms := c.pacmanMirrors(); len(ms) > 0 {
		opts = append(opts, builder.WithMirrorList(ms...))
	}
	if repos := c.builderRepos(); len(repos) > 0 {
		opts = append(opts, builder.WithRepos(repos...))
	}
	return opts
}

// pacmanMirrors is pacman_mirrors, or its deprecated name mirrors.
func (c *Config) pacmanMirrors() []string {
	if len(c.PacmanMirrors) > 0 {
		return c.PacmanMirrors
	}
	return c.Mirrors
}

func (c *Config) builderRepos() []pacman.Repo {
	var out []pacman.Repo
	for _, r := range c.PacmanRepos {
		out = append(out, pacman.Repo{Name: r.Name, Servers: r.Servers, SigLevel: r.SigLevel})
	}
	return out
}

// PacmanCacheDir is the directory of the package caches, "" when the
// caches are off.
func (c *Config) PacmanCacheDir() string {
	switch {
	case !c.PacmanCache.Enabled:
		return ""
	case c.PacmanCache.Dir != "":
		return c.PacmanCache.Dir
	}
	return filepath.Join(c.DataDir, pacmanCacheDir)
}

// pacmanCacheDir is the data dir's Pacman package caches (one per target),
// of `vagent run` and `vagent build` alike.
const pacmanCacheDir = "pacman-cache"

// LogFilePath is where the agent writes its log besides stderr, "" for
// nowhere (log_file: -).
func (c *Config) LogFilePath() string {
	switch c.LogFile {
	case "-":
		return ""
	case "":
		return filepath.Join(c.DataDir, "vagent.log")
	}
	return c.LogFile
}
