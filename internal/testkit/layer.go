package testkit

import (
	"archive/tar"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/vieter-v/vagent/oci"
)

// countingWriter counts bytes written through it.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// writeLayer streams the tar that fill writes, compressed per mt, into the
// file path, and returns the layer with its digest and diff id.
func writeLayer(path string, mt types.MediaType, fill func(*tar.Writer) error) (_ v1.Layer, retErr error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := f.Close(); retErr == nil && cerr != nil {
			retErr = cerr
		}
	}()
	blobHash, diffHash := sha256.New(), sha256.New()
	size := &countingWriter{}
	blob := io.MultiWriter(f, blobHash, size)

	var comp io.WriteCloser
	switch mt {
	case types.OCILayer:
		comp, err = gzip.NewWriterLevel(blob, gzip.DefaultCompression)
	case types.OCILayerZStd:
		comp, err = zstd.NewWriter(blob, zstd.WithEncoderLevel(zstd.SpeedDefault))
	case types.OCIUncompressedLayer:
		comp = nopWriteCloser{blob}
	default:
		err = fmt.Errorf("unsupported layer media type %s", mt)
	}
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(io.MultiWriter(comp, diffHash))
	if err := fill(tw); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := comp.Close(); err != nil {
		return nil, err
	}
	return oci.FileLayer(path, v1.Descriptor{MediaType: mt, Digest: sha256Hash(blobHash), Size: size.n}, sha256Hash(diffHash))
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

func sha256Hash(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
}
