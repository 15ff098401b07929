package oci

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// applier applies layers to one directory (extract_linux.go), keeping
// the account of the image's Budget over all of them.
type applier interface {
	// applyLayer applies one uncompressed layer and reads r to its end
	// (the digest covers the whole blob).
	applyLayer(ctx context.Context, r io.Reader, layer string) error
	close()
}

// Unpack flattens the layers of img, bottom first, into dir, which is
// created if needed and should be empty. It does not use
// go-containerregistry's mutate.Extract: see the package documentation for
// what it honours and what it rejects. A rejected entry fails the unpack
// with ErrUnsafeEntry and an error naming the layer and the entry; dir is
// then left half written, for the caller to remove.
//
// Compressed layers are read with layer.Compressed and checked against
// their digest; gzip, zstd and uncompressed layers are recognised by their
// first bytes.
func Unpack(ctx context.Context, img v1.Image, dir string, opts ...UnpackOption) error {
	o := defaultUnpackOptions()
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return err
		}
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("reading layers: %w", err)
	}
	descs := make([]v1.Descriptor, len(layers))
	for i, l := range layers {
		if descs[i].Digest, err = l.Digest(); err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		if descs[i].Size, err = l.Size(); err != nil {
			descs[i].Size = -1
		}
	}
	open := func(_ context.Context, i int) (io.ReadCloser, bool, error) {
		rc, err := layers[i].Compressed()
		return rc, false, err
	}
	return unpackLayers(ctx, dir, descs, open, o)
}

// unpackLayers applies layers, opened in order with open, into dir. open
// reports whether the blob was checked against its digest already (then
// it is not hashed again).
func unpackLayers(ctx context.Context, dir string, layers []v1.Descriptor, open func(context.Context, int) (rc io.ReadCloser, checked bool, err error), o *unpackOptions) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return diskFull(fmt.Errorf("creating %s: %w", dir, err))
	}
	a, err := newApplier(dir, o)
	if err != nil {
		return err
	}
	defer a.close()
	for i, l := range layers {
		name := layerName(i, len(layers), l.Digest)
		report := func(done int64) {
			if o.progress != nil {
				o.progress(Progress{Ref: o.ref, Phase: PhaseExtract, Blob: l.Digest, Index: i, Count: len(layers), Done: done, Total: l.Size})
			}
		}
		rc, checked, err := open(ctx, i)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		var want *v1.Hash
		if o.verify && !checked {
			want = &l.Digest
		}
		err = applyBlob(ctx, a, rc, name, want, report)
		rc.Close()
		if err != nil {
			return err
		}
		if o.progress != nil {
			o.progress(Progress{Ref: o.ref, Phase: PhaseApplied, Blob: l.Digest, Index: i, Count: len(layers), Done: l.Size, Total: l.Size})
		}
	}
	return nil
}

func layerName(i, n int, d v1.Hash) string {
	return fmt.Sprintf("layer %d of %d (%s)", i+1, n, shortDigest(d))
}

func shortDigest(d v1.Hash) string {
	h := d.Hex
	if len(h) > 12 {
		h = h[:12]
	}
	return d.Algorithm + ":" + h
}

// applyBlob decompresses and applies one layer blob: the stream goes from
// r through the digest check and the decompressor (in its own goroutine)
// into the extractor, in bounded memory.
func applyBlob(ctx context.Context, a applier, r io.Reader, name string, want *v1.Hash, progress func(int64)) error {
	var h hash.Hash
	if want != nil {
		if want.Algorithm != "sha256" {
			return fmt.Errorf("%s: %w: digest algorithm %q", name, ErrUnsupportedMedia, want.Algorithm)
		}
		h = sha256.New()
		r = io.TeeReader(r, h)
	}
	cr := &countingReader{r: r, report: progress}
	br := bufio.NewReaderSize(cr, 256<<10)
	err := applyStream(ctx, a, br, name)
	if h != nil {
		// Hash what is left, so that a corrupt blob is reported as such
		// rather than as the decompressor's or tar's complaint about it
		// (unless the unpack was cancelled: then nothing more is read).
		if _, cerr := io.Copy(io.Discard, ctxReader{ctx, br}); cerr != nil && err == nil {
			err = fmt.Errorf("%s: reading: %w", name, cerr)
		}
		if ctx.Err() != nil {
			return err
		}
		got := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
		if got != *want {
			return fmt.Errorf("%s: %w: got %s", name, ErrDigestMismatch, got)
		}
	}
	return err
}

// applyStream decompresses br in a goroutine and applies the tar. When it
// returns, nothing reads br any more.
func applyStream(ctx context.Context, a applier, br *bufio.Reader, name string) error {
	dr, free, err := decompress(br)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer free()
	p := newChunkPipe(dr)
	defer p.close()
	return a.applyLayer(ctx, p, name)
}

type countingReader struct {
	r      io.Reader
	n      int64
	last   int64
	report func(int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.report != nil && (c.n-c.last >= 1<<20 || err != nil) {
		c.last = c.n
		c.report(c.n)
	}
	return n, err
}
