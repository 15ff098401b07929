package config

import (
	"errors"
	"os"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvName is the variable that overrides the key at path:
// VIETER_BUILD_LIMITS_MEMORY for build_limits.memory.
func EnvName(path string) string {
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
		ev := EnvName(key)
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

// envNames returns every VIETER_* variable the configuration reads:
// VIETER_<KEY> and VIETER_<KEY>_FILE for the keys loader.env applies.
func envNames() map[string]bool {
	names := map[string]bool{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for name, f := range yamlFields(t) {
			key, ft := join(path, name), f.Type
			switch {
			case ft.Kind() == reflect.Struct && ft != durationType:
				walk(ft, key)
			case ft.Kind() == reflect.Map || (ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.String):
			default:
				names[EnvName(key)] = true
				names[EnvName(key)+"_FILE"] = true
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return names
}

// CheckEnviron reports the VIETER_* variables of environ ("NAME=value")
// that no key reads, as unknown YAML keys are reported: a misspelt
// variable would otherwise be ignored without a word.
func CheckEnviron(environ []string) error {
	known := envNames()
	var errs []error
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "VIETER_") || known[name] {
			continue
		}
		msg := "unknown variable (no configuration key reads it)"
		if s := nearest(name, known); s != "" {
			msg += "; did you mean " + s + "?"
		}
		errs = append(errs, &Error{Where: name, Msg: msg})
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// nearest returns the name of names closest to s, "" when none is close
// (more than a third of s would have to change).
func nearest(s string, names map[string]bool) string {
	best, bestD := "", len(s)/3+1
	for n := range names {
		if d := editDistance(s, n); d < bestD || (d == bestD && best != "" && n < best) {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
