package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is an invalid configuration value, located by the file and line
// or the environment variable it came from. Load and Parse report all of
// a file's invalid values at once, joined (errors.Join) in the order of
// the file, the environment's last.
type Error struct {
	Where string // "agent.yaml:7", "VIETER_ARCH", "agent.yaml"
	Key   string // "build_limits.memory"; "" for the file or variable as a whole
	Msg   string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return e.Where + ": " + e.Msg
	}
	return e.Where + ": " + e.Key + ": " + e.Msg
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
		l.errs = append(l.errs, &Error{Where: where, Key: key, Msg: fmt.Sprintf(format, args...)})
	case len(l.errs) == maxErrors:
		l.errs = append(l.errs, &Error{Where: l.file, Msg: "too many errors"})
	}
}

// maxNodes bounds the YAML nodes visited, aliases included.
const maxNodes = 100000

// Load reads the configuration file at path (none if path is ""),
// applies the environment's VIETER_* overrides and checks every value.
// Errors name the file and line, or the variable, and the key.
func Load(path string, getenv func(string) string) (*Config, error) {
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
	c, err := Parse(name, data, getenv)
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

// Parse parses data, the contents of file ("agent.yaml" if ""), with the
// overrides of getenv, and checks every value as Load does. It reads no
// file but the environment's *_FILE secrets.
func Parse(file string, data []byte, getenv func(string) string) (*Config, error) {
	if file == "" || file == "." {
		file = "agent.yaml"
	}
	c := Default()
	l := &loader{file: file, where: map[string]string{}}
	if line, key, ok := looksLikeTOML(data); ok {
		return nil, &Error{Where: fmt.Sprintf("%s:%d", file, line), Msg: fmt.Sprintf("this looks like TOML (%s = …), the reference agent's format: "+
			"vagent reads YAML, one \"key: value\" per line (%s: …); agent.example.yaml has every key", key, key)}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			return nil, &Error{Where: file + ":" + m[1], Msg: m[2]}
		}
		return nil, &Error{Where: file, Msg: msg}
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
	_, c.DataDirSet = l.where["data_dir"]
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
	var ce *Error
	if !errors.As(err, &ce) {
		return math.MaxInt
	}
	if strings.HasPrefix(ce.Where, "VIETER_") {
		return math.MaxInt - 1
	}
	_, line, ok := strings.Cut(ce.Where, ":")
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

var yamlLineRE = regexp.MustCompile(`^line ([0-9]+): (.*)$`)

var (
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[Size]()
)
