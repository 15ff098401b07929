package main

import (
	"errors"
	"reflect"
	"sort"
	"strings"
)

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
				names[envName(key)] = true
				names[envName(key)+"_FILE"] = true
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return names
}

// checkEnviron reports the VIETER_* variables of environ ("NAME=value")
// that no key reads, as unknown YAML keys are reported: a misspelt
// variable would otherwise be ignored without a word.
func checkEnviron(environ []string) error {
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
		errs = append(errs, &configError{where: name, msg: msg})
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
