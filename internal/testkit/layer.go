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
)

// blobLayer is a layer whose blob is a file on disk, in any of the three
// OCI layer media types (gzip, zstd, uncompressed).
type blobLayer struct {
	path      string
	mediaType types.MediaType
	digest    v1.Hash
	diffID    v1.Hash
	size      int64
}

var _ v1.Layer = (*blobLayer)(nil)

func (l *blobLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *blobLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *blobLayer) Size() (int64, error)                { return l.size, nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *blobLayer) Uncompressed() (io.ReadCloser, error) {
	return openUncompressed(l.path, l.mediaType)
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

func openUncompressed(path string, mt types.MediaType) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	switch mt {
	case types.OCILayer, types.DockerLayer:
		zr, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		return readCloser{zr, func() error { zr.Close(); return f.Close() }}, nil
	case types.OCILayerZStd:
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			f.Close()
			return nil, err
		}
		return readCloser{zr, func() error { zr.Close(); return f.Close() }}, nil
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return f, nil
	}
	f.Close()
	return nil, fmt.Errorf("unsupported layer media type %s", mt)
}

// countingWriter counts bytes written through it.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// writeLayer streams the tar that fill writes, compressed per mt, into the
// file path, and returns the layer with its digest and diff id.
func writeLayer(path string, mt types.MediaType, fill func(*tar.Writer) error) (_ *blobLayer, retErr error) {
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
	return &blobLayer{
		path:      path,
		mediaType: mt,
		digest:    sha256Hash(blobHash),
		diffID:    sha256Hash(diffHash),
		size:      size.n,
	}, nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

func sha256Hash(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
}
