package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// source is where an image's manifest and blobs come from: a registry
// (with mirrors), an OCI layout or an archive. Blobs are not verified by a
// source: the store checks every byte against its digest.
type source interface {
	// resolve returns the manifest of the image for the platform, and its
	// digest.
	resolve(ctx context.Context) (raw []byte, digest v1.Hash, err error)
	// blob opens a blob.
	blob(ctx context.Context, h v1.Hash) (io.ReadCloser, error)
	close() error
}

// maxManifestSize bounds manifests and indexes read into memory.
const maxManifestSize = 4 << 20

// digestOf returns the sha256 digest of b.
func digestOf(b []byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(b))}
}

// platformMatches reports whether an index entry's platform fits want. An
// empty wanted variant matches any variant.
func platformMatches(want v1.Platform, got *v1.Platform) bool {
	if got == nil || got.OS != want.OS || got.Architecture != want.Architecture {
		return false
	}
	norm := func(p v1.Platform) string {
		if p.Architecture == "arm64" && p.Variant == "v8" {
			return ""
		}
		return p.Variant
	}
	return want.Variant == "" || norm(*got) == norm(want)
}

// selectPlatform picks the manifest for want from an index.
func selectPlatform(raw []byte, want v1.Platform) (v1.Descriptor, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("parsing index: %w", err)
	}
	var have []string
	for _, d := range idx.Manifests {
		if platformMatches(want, d.Platform) {
			return d, nil
		}
		if d.Platform != nil && d.Platform.OS != "unknown" {
			have = append(have, d.Platform.String())
		}
	}
	// An index of one image without platforms (as some tools write).
	if len(idx.Manifests) == 1 && idx.Manifests[0].Platform == nil {
		return idx.Manifests[0], nil
	}
	return v1.Descriptor{}, fmt.Errorf("%w: no image for platform %s (the index has %s)", ErrUnknownImage, want.String(), strings.Join(have, ", "))
}

// mediaKind tells an image manifest from an index, by the mediaType field
// or, if it is absent, by the fields present.
func mediaKind(raw []byte) (types.MediaType, error) {
	var probe struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     types.MediaType   `json:"mediaType"`
		Manifests     []json.RawMessage `json:"manifests"`
		Layers        []json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return "", fmt.Errorf("parsing manifest: %w", err)
	}
	if probe.SchemaVersion == 1 {
		return "", fmt.Errorf("%w: docker schema 1 manifest", ErrUnsupportedMedia)
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType, nil
	case probe.Manifests != nil:
		return types.OCIImageIndex, nil
	default:
		return types.OCIManifestSchema1, nil
	}
}

// resolveManifest follows index entries (selecting the platform) until it
// reaches an image manifest. fetch returns the raw manifest for a digest.
func resolveManifest(ctx context.Context, raw []byte, want v1.Platform, fetch func(context.Context, v1.Hash) ([]byte, error)) ([]byte, v1.Hash, error) {
	for range 4 {
		mt, err := mediaKind(raw)
		if err != nil {
			return nil, v1.Hash{}, err
		}
		if mt.IsImage() {
			return raw, digestOf(raw), nil
		}
		if !mt.IsIndex() {
			return nil, v1.Hash{}, fmt.Errorf("%w: manifest of type %s", ErrUnsupportedMedia, mt)
		}
		d, err := selectPlatform(raw, want)
		if err != nil {
			return nil, v1.Hash{}, err
		}
		if raw, err = fetch(ctx, d.Digest); err != nil {
			return nil, v1.Hash{}, err
		}
		if got := digestOf(raw); got != d.Digest {
			return nil, v1.Hash{}, fmt.Errorf("manifest %s: %w: got %s", d.Digest, ErrDigestMismatch, got)
		}
	}
	return nil, v1.Hash{}, fmt.Errorf("%w: indexes nested too deep", ErrUnsupportedMedia)
}

// checkLayers rejects manifests this package cannot unpack.
func checkLayers(m *v1.Manifest) error {
	for i, l := range m.Layers {
		switch l.MediaType {
		case types.DockerLayer, types.DockerUncompressedLayer, types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer, "":
		default:
			return fmt.Errorf("layer %d: %w: %s", i+1, ErrUnsupportedMedia, l.MediaType)
		}
		if l.Digest.Algorithm != "sha256" || len(l.Digest.Hex) != 64 {
			return fmt.Errorf("layer %d: %w: digest %s", i+1, ErrUnsupportedMedia, l.Digest)
		}
	}
	if m.Config.Digest.Algorithm != "sha256" || len(m.Config.Digest.Hex) != 64 {
		return fmt.Errorf("config: %w: digest %s", ErrUnsupportedMedia, m.Config.Digest)
	}
	return nil
}
