package oci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image returns the image whose manifest digest is h as a v1.Image read
// from the store's blobs: what a caller builds on (mutate.Append) and
// writes elsewhere (Layout.Put, which hardlinks the store's blobs instead
// of copying them when it can). The manifest and config are
// checked against their digests; layers are read from the store's files
// as they are. The image's blobs stay in the store while a reference to
// it does (see Remove and Prune). ErrNotFound if the manifest is not in
// the store.
func (s *Store) Image(h v1.Hash) (v1.Image, error) {
	raw, err := s.readBlob(h)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", h, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", h, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("image %s: parsing manifest: %w", h, err)
	}
	if err := checkLayers(m); err != nil {
		return nil, fmt.Errorf("image %s: %w", h, err)
	}
	return partial.CompressedToImage(&storeImage{s: s, raw: raw, manifest: m})
}

// storeImage is partial.CompressedImageCore over the store's blobs.
type storeImage struct {
	s        *Store
	raw      []byte
	manifest *v1.Manifest
}

func (si *storeImage) RawManifest() ([]byte, error) { return si.raw, nil }

func (si *storeImage) MediaType() (types.MediaType, error) {
	if si.manifest.MediaType != "" {
		return si.manifest.MediaType, nil
	}
	return types.OCIManifestSchema1, nil
}

func (si *storeImage) RawConfigFile() ([]byte, error) {
	return si.s.readBlob(si.manifest.Config.Digest)
}

func (si *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range si.manifest.Layers {
		if l.Digest == h {
			p, err := si.s.blobPath(h)
			if err != nil {
				return nil, err
			}
			return &storeLayer{path: p, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("image has no layer %s: %w", h, ErrNotFound)
}

// storeLayer is a layer blob in a file: one the store verified when it
// was written, or FileLayer's.
type storeLayer struct {
	path string
	desc v1.Descriptor
}

func (l *storeLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *storeLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *storeLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

// knownDiffID is a storeLayer whose diff id its writer computed.
type knownDiffID struct {
	storeLayer
	diffID v1.Hash
}

func (l *knownDiffID) DiffID() (v1.Hash, error) { return l.diffID, nil }

// FileLayer returns the layer whose blob is the file path, compressed as
// desc.MediaType says (gzip, zstd or none), with desc's digest and size
// and the diff id diffID, all computed by whoever wrote the file:
// go-containerregistry's partial.CompressedToLayer over a file, which
// decompresses what Uncompressed returns.
func FileLayer(path string, desc v1.Descriptor, diffID v1.Hash) (v1.Layer, error) {
	return partial.CompressedToLayer(&knownDiffID{storeLayer{path: path, desc: desc}, diffID})
}
