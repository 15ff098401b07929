package poll

import (
	"fmt"
	"strconv"
	"time"
)

// LogHeader is the block of lines at the top of every build log: which
// agent built what, on which host, from which images, and when — so that
// with many agents a log still says where its package came from. Each line
// is "vagent: KEY: VALUE"; an empty line ends the block. Fields that are
// not known are left out.
//
//	vagent: agent: build-01
//	vagent: version: 1.4.0
//	vagent: host: build-01.example.org
//	vagent: slot: 0
//	vagent: started: 2025-03-01T12:00:00Z
//	vagent: target: 42
//	vagent: repository: extra
//	vagent: arch: x86_64
//	vagent: source: git https://example.org/pkg.git
//	vagent: branch: main
//	vagent: base image: archlinux:base-devel
//	vagent: base image digest: sha256:…
//	vagent: builder digest: sha256:…
//
// The agent writes it in front of the spooled log when it uploads it (the
// executor's fields, such as the digests, are known only once the builder
// is ready); `vagent build` prints it first and the executor's fields as
// they come.
type LogHeader struct {
	Agent   string // agent_name
	Version string // vagent's version
	Host    string
	Slot    int // -1: none (vagent build)
	Arch    string
	Job     Job
	Start   time.Time
	// Fields are the executor's (ReportHeader), in the order they came.
	Fields []HeaderField
}

// HeaderField is a field of a log header that the executor reported.
type HeaderField struct {
	Key   string `json:"k"`
	Value string `json:"v"`
}

// Text returns the header's lines and the empty line that ends it.
func (h LogHeader) Text() []byte {
	var b []byte
	add := func(key, value string) {
		if value != "" {
			b = fmt.Appendf(b, "vagent: %s: %s\n", key, OneLine(value))
		}
	}
	add("agent", h.Agent)
	add("version", h.Version)
	add("host", h.Host)
	if h.Slot >= 0 {
		add("slot", strconv.Itoa(h.Slot))
	}
	if !h.Start.IsZero() {
		add("started", h.Start.UTC().Format(time.RFC3339))
	}
	j := h.Job
	if j.TargetID > 0 {
		add("target", strconv.Itoa(j.TargetID))
	}
	add("repository", j.Repo)
	add("arch", h.Arch)
	if j.URL != "" {
		kind := j.Kind
		if kind == "" {
			kind = "git"
		}
		add("source", kind+" "+RedactURL(j.URL))
	}
	add("branch", j.Branch)
	add("path", j.Path)
	if j.Force {
		add("force", "true")
	}
	add("base image", j.BaseImage)
	for _, f := range h.Fields {
		add(f.Key, f.Value)
	}
	return append(b, '\n')
}

// HeaderLine is one line of a header field the executor reports after the
// header was written ("vagent: builder digest: sha256:…\n"), for logs
// that stream, such as `vagent build`'s.
func HeaderLine(key, value string) string {
	return fmt.Sprintf("vagent: %s: %s\n", key, OneLine(value))
}

// setField sets key in fields, keeping at most MaxHeaderFields.
func setField(fields []HeaderField, key, value string) []HeaderField {
	for i, f := range fields {
		if f.Key == key {
			fields[i].Value = value
			return fields
		}
	}
	if len(fields) >= MaxHeaderFields {
		return fields
	}
	return append(fields, HeaderField{Key: key, Value: value})
}
