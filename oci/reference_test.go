package oci

import (
	"errors"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParseReference(t *testing.T) {
	abs, _ := filepath.Abs("rel/dir")
	dg := "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in        string
		transport Transport
		canonical string
		host      string
	}{
		{"archlinux:base-devel", TransportRegistry, "docker.io/library/archlinux:base-devel", "index.docker.io"},
		{"archlinux", TransportRegistry, "docker.io/library/archlinux:latest", "index.docker.io"},
		{"docker://archlinux", TransportRegistry, "docker.io/library/archlinux:latest", "index.docker.io"},
		{"docker.io/vieter/builder:1", TransportRegistry, "docker.io/vieter/builder:1", "index.docker.io"},
		{"localhost:5000/a/b/c:t", TransportRegistry, "localhost:5000/a/b/c:t", "localhost:5000"},
		{"reg.example.com/x@" + dg, TransportRegistry, "reg.example.com/x@" + dg, "reg.example.com"},
		{"oci:/srv/layout", TransportOCILayout, "oci:/srv/layout", ""},
		{"oci:/srv/layout:v1", TransportOCILayout, "oci:/srv/layout:v1", ""},
		{"oci:/srv/lay:out/dir", TransportOCILayout, "oci:/srv/lay:out/dir", ""},
		{"oci:/srv/layout@" + dg, TransportOCILayout, "oci:/srv/layout@" + dg, ""},
		{"oci:rel/dir:v2", TransportOCILayout, "oci:" + abs + ":v2", ""},
		{"oci-archive:/tmp/i.tar:v1", TransportOCIArchive, "oci-archive:/tmp/i.tar:v1", ""},
		{"docker-archive:/tmp/i.tar", TransportDockerArchive, "docker-archive:/tmp/i.tar", ""},
	}
	for _, tt := range tests {
		r, err := ParseReference(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if r.Transport != tt.transport || r.String() != tt.canonical || r.host() != tt.host {
			t.Errorf("%s: %s %q host %q, want %s %q host %q", tt.in, r.Transport, r.String(), r.host(), tt.transport, tt.canonical, tt.host)
		}
		// The canonical form parses to itself.
		if r2, err := ParseReference(r.String()); err != nil || r2.String() != r.String() {
			t.Errorf("%s: canonical %q parses to %q, %v", tt.in, r.String(), r2.String(), err)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "oci:", "oci:/x@sha256:zz", "docker-archive:", "ftp://x/y", "a b"} {
		if _, err := ParseReference(bad); !errors.Is(err, ErrBadReference) {
			t.Errorf("%q: err = %v, want ErrBadReference", bad, err)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for name, opt := range map[string]Option{
		"jobs":     WithParallelDownloads(0),
		"mirror":   WithMirrors("docker.io", "ftp://m"),
		"host":     WithInsecure("a/b"),
		"platform": WithPlatform(v1.Platform{OS: "linux"}),
	} {
		if err := opt(defaultOptions()); err == nil {
			t.Errorf("%s: bad option accepted", name)
		}
	}
	o := defaultOptions()
	WithMirrors("docker.io", "http://m1:5000", "m2")(o)
	if got := o.mirrors["index.docker.io"]; len(got) != 2 || got[0] != "m1:5000" || !o.insecure["m1:5000"] || o.insecure["m2"] {
		t.Errorf("mirrors %v insecure %v", got, o.insecure)
	}
}
