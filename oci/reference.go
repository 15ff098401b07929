package oci

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Transport says where an image comes from.
type Transport string

// Transports understood by ParseReference.
const (
	TransportRegistry      Transport = "docker"         // a registry: [docker://]HOST/REPO[:TAG|@DIGEST]
	TransportOCILayout     Transport = "oci"            // oci:DIR[:TAG|@DIGEST]
	TransportDockerArchive Transport = "docker-archive" // docker-archive:FILE (docker save)
	TransportOCIArchive    Transport = "oci-archive"    // oci-archive:FILE[:TAG|@DIGEST] (a tar of an OCI layout)
)

// Reference is a parsed image reference.
type Reference struct {
	Transport Transport
	// Name is the registry reference, with Docker's defaults applied
	// (registry docker.io, namespace library, tag latest). Registry only.
	Name name.Reference
	// Path is the absolute path of a layout directory or an archive.
	Path string
	// Tag and Digest select an image in a layout or an OCI archive; both
	// empty means the only image it holds.
	Tag    string
	Digest string
}

// ParseReference parses an image reference: a registry reference with
// Docker's defaults ("archlinux:base-devel" is
// docker.io/library/archlinux:base-devel), optionally prefixed with
// "docker://"; "oci:DIR[:TAG|@DIGEST]" for an OCI image layout directory;
// "docker-archive:FILE" for a `docker save` tarball; and
// "oci-archive:FILE[:TAG|@DIGEST]" for a tarball of an OCI layout.
func ParseReference(s string) (Reference, error) {
	bad := func(why string) (Reference, error) {
		return Reference{}, fmt.Errorf("%w %q: %s", ErrBadReference, s, why)
	}
	if s == "" {
		return bad("empty")
	}
	tr, rest, found := strings.Cut(s, ":")
	if found {
		switch Transport(tr) {
		case TransportOCILayout, TransportOCIArchive:
			p, tag, dgst := splitLayoutRef(rest)
			if p == "" {
				return bad("no path")
			}
			if dgst != "" {
				if _, err := v1.NewHash(dgst); err != nil {
					return bad("bad digest")
				}
			}
			abs, err := filepath.Abs(p)
			if err != nil {
				return bad(err.Error())
			}
			return Reference{Transport: Transport(tr), Path: abs, Tag: tag, Digest: dgst}, nil
		case TransportDockerArchive:
			if rest == "" {
				return bad("no path")
			}
			abs, err := filepath.Abs(rest)
			if err != nil {
				return bad(err.Error())
			}
			return Reference{Transport: TransportDockerArchive, Path: abs}, nil
		}
	}
	s2 := strings.TrimPrefix(s, "docker://")
	if strings.Contains(s2, "://") {
		return bad("unknown transport")
	}
	ref, err := name.ParseReference(s2)
	if err != nil {
		return bad(err.Error())
	}
	return Reference{Transport: TransportRegistry, Name: ref}, nil
}

// splitLayoutRef splits "DIR[:TAG|@DIGEST]". A tag is what follows the last
// colon after the last slash.
func splitLayoutRef(s string) (p, tag, dgst string) {
	if i := strings.LastIndex(s, "@"); i >= 0 && strings.Contains(s[i:], ":") {
		return s[:i], "", s[i+1:]
	}
	slash := strings.LastIndex(s, "/")
	if i := strings.LastIndex(s, ":"); i > slash {
		return s[:i], s[i+1:], ""
	}
	return s, "", ""
}

// String returns the canonical form of the reference, used as its name in
// the store ("docker.io/library/archlinux:base-devel", "oci:/abs/dir:tag").
func (r Reference) String() string {
	switch r.Transport {
	case TransportRegistry:
		if r.Name == nil {
			return ""
		}
		s := r.Name.Name()
		if rest, ok := strings.CutPrefix(s, name.DefaultRegistry+"/"); ok {
			s = "docker.io/" + rest
		}
		return s
	case TransportDockerArchive:
		return string(r.Transport) + ":" + r.Path
	default:
		s := string(r.Transport) + ":" + r.Path
		if r.Digest != "" {
			return s + "@" + r.Digest
		}
		if r.Tag != "" {
			return s + ":" + r.Tag
		}
		return s
	}
}

// host returns the registry host of a registry reference, as
// go-containerregistry names it ("index.docker.io").
func (r Reference) host() string {
	if r.Transport != TransportRegistry || r.Name == nil {
		return ""
	}
	return r.Name.Context().RegistryStr()
}
