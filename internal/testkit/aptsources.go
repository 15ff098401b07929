package testkit

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// aptSource is one "deb" entry of the apt sources.
type aptSource struct {
	uri    string
	suites []string
}

// DebianMirror returns the URI of the first enabled "deb" source in the
// apt configuration under root ("/" on a real system) that serves the
// given suite (e.g. "bookworm"), reading sources.list and
// sources.list.d/*.list (one-line format) and sources.list.d/*.sources
// (deb822), in apt's order. Only http, https, ftp and file URIs qualify.
func DebianMirror(root, suite string) (string, error) {
	srcs, err := readAptSources(root)
	if err != nil {
		return "", err
	}
	for _, s := range srcs {
		if slices.Contains(s.suites, suite) {
			return s.uri, nil
		}
	}
	return "", fmt.Errorf("suite %s: %w", suite, ErrNoMirror)
}

func readAptSources(root string) ([]aptSource, error) {
	dir := filepath.Join(root, "etc/apt")
	var srcs []aptSource
	b, err := os.ReadFile(filepath.Join(dir, "sources.list"))
	switch {
	case err == nil:
		srcs = append(srcs, parseOneLineSources(b)...)
	case !os.IsNotExist(err):
		return nil, fmt.Errorf("reading apt sources: %w", err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "sources.list.d"))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading apt sources: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		ext := filepath.Ext(n)
		if ext != ".list" && ext != ".sources" {
			continue // apt ignores other names (.disabled, .save, ...)
		}
		b, err := os.ReadFile(filepath.Join(dir, "sources.list.d", n))
		if err != nil {
			return nil, fmt.Errorf("reading apt sources: %w", err)
		}
		if ext == ".list" {
			srcs = append(srcs, parseOneLineSources(b)...)
		} else {
			srcs = append(srcs, parseDeb822Sources(b)...)
		}
	}
	return srcs, nil
}

// parseOneLineSources parses "deb [opts] URI SUITE COMPONENT..." lines.
func parseOneLineSources(b []byte) []aptSource {
	var srcs []aptSource
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // options, possibly with spaces
			i := slices.IndexFunc(f, func(s string) bool { return strings.HasSuffix(s, "]") })
			if i < 0 {
				continue
			}
			f = f[i+1:]
		}
		if len(f) < 2 || !usableMirror(f[0]) {
			continue
		}
		srcs = append(srcs, aptSource{uri: f[0], suites: []string{f[1]}})
	}
	return srcs
}

// parseDeb822Sources parses paragraphs of "Field: value" stanzas.
func parseDeb822Sources(b []byte) []aptSource {
	var srcs []aptSource
	flush := func(p map[string]string) {
		if len(p) == 0 || strings.EqualFold(p["enabled"], "no") {
			return
		}
		if !slices.Contains(strings.Fields(p["types"]), "deb") {
			return
		}
		for _, u := range strings.Fields(p["uris"]) {
			if usableMirror(u) {
				srcs = append(srcs, aptSource{uri: u, suites: strings.Fields(p["suites"])})
			}
		}
	}
	p := map[string]string{}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush(p)
			p, last = map[string]string{}, ""
		case line[0] == ' ' || line[0] == '\t': // continuation
			if last != "" {
				p[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			p[last] = strings.TrimSpace(v)
		}
	}
	flush(p)
	return srcs
}

func usableMirror(u string) bool {
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" && pu.Scheme != "file" {
		return false
	}
	switch pu.Scheme {
	case "http", "https", "ftp", "file":
		return true
	}
	return false
}
