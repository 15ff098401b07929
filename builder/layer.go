package builder

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/vieter-v/vagent/oci"
)

// hashingWriter hashes and counts what passes through it.
type hashingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newHashingWriter(w io.Writer) *hashingWriter {
	return &hashingWriter{w: w, h: sha256.New()}
}

func (hw *hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.n += int64(n)
	return n, err
}

func (hw *hashingWriter) sum() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", hw.h.Sum(nil))}
}

// writeGzipLayer writes the tar that fill produces to path, gzipped, and
// returns it as a layer of media type mt.
func writeGzipLayer(path string, mt types.MediaType, fill func(io.Writer) error) (_ v1.Layer, retErr error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if retErr != nil {
			os.Remove(path)
		}
	}()
	compressed := newHashingWriter(f)
	zw, err := gzip.NewWriterLevel(compressed, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	uncompressed := newHashingWriter(zw)
	if err := fill(uncompressed); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	err = f.Close()
	f = nil
	if err != nil {
		return nil, err
	}
	return oci.FileLayer(path, v1.Descriptor{MediaType: mt, Digest: compressed.sum(), Size: compressed.n}, uncompressed.sum())
}
