package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const refNameAnnotation = "org.opencontainers.image.ref.name"

// layoutFiles reads files of an OCI image layout.
type layoutFiles interface {
	open(name string) (io.ReadCloser, error)
	close() error
}

// dirFiles is a layout directory.
type dirFiles struct{ root string }

func (d dirFiles) open(name string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(d.root, filepath.FromSlash(name)))
}
func (dirFiles) close() error { return nil }

// tarFiles is a tarball of a layout, read in place: its entries are indexed
// once and read as sections of the file.
type tarFiles struct {
	f       *os.File
	entries map[string]tarSection
}

type tarSection struct{ off, size int64 }

func openTarFiles(p string) (*tarFiles, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	t := &tarFiles{f: f, entries: map[string]tarSection{}}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			f.Close()
			return nil, err
		}
		t.entries[path.Clean(strings.TrimPrefix(hdr.Name, "/"))] = tarSection{off: off, size: hdr.Size}
	}
	return t, nil
}

func (t *tarFiles) open(name string) (io.ReadCloser, error) {
	s, ok := t.entries[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return io.NopCloser(io.NewSectionReader(t.f, s.off, s.size)), nil
}

func (t *tarFiles) close() error { return t.f.Close() }

// layoutSource is an image in an OCI layout (a directory or a tarball).
type layoutSource struct {
	files    layoutFiles
	ref      Reference
	platform v1.Platform
}

func newLayoutSource(r Reference, platform v1.Platform) (*layoutSource, error) {
	var files layoutFiles
	if r.Transport == TransportOCIArchive {
		t, err := openTarFiles(r.Path)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnknownImage, err)
		}
		files = t
	} else {
		files = dirFiles{root: r.Path}
	}
	return &layoutSource{files: files, ref: r, platform: platform}, nil
}

func (l *layoutSource) close() error { return l.files.close() }

func (l *layoutSource) readSmall(name string) ([]byte, error) {
	rc, err := l.files.open(name)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%w: %s has no %s", ErrUnknownImage, l.ref.Path, name)
		}
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxManifestSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxManifestSize)
	}
	return b, nil
}

func blobName(h v1.Hash) (string, error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%w: digest %q", ErrUnsupportedMedia, h.String())
	}
	return "blobs/sha256/" + h.Hex, nil
}

func (l *layoutSource) manifestBlob(_ context.Context, h v1.Hash) ([]byte, error) {
	n, err := blobName(h)
	if err != nil {
		return nil, err
	}
	return l.readSmall(n)
}

func (l *layoutSource) resolve(ctx context.Context) ([]byte, v1.Hash, error) {
	raw, err := l.readSmall("index.json")
	if err != nil {
		return nil, v1.Hash{}, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("parsing %s/index.json: %w", l.ref.Path, err)
	}
	var picked []v1.Descriptor
	for _, d := range idx.Manifests {
		switch {
		case l.ref.Digest != "":
			if d.Digest.String() == l.ref.Digest {
				picked = append(picked, d)
			}
		case l.ref.Tag != "":
			if d.Annotations[refNameAnnotation] == l.ref.Tag {
				picked = append(picked, d)
			}
		default:
			picked = append(picked, d)
		}
	}
	if len(picked) == 0 && l.ref.Digest != "" {
		// Any manifest in the layout may be named by digest.
		h, err := v1.NewHash(l.ref.Digest)
		if err != nil {
			return nil, v1.Hash{}, err
		}
		picked = append(picked, v1.Descriptor{Digest: h})
	}
	switch {
	case len(picked) == 0:
		return nil, v1.Hash{}, fmt.Errorf("%w: %s", ErrUnknownImage, l.ref)
	case len(picked) > 1:
		return nil, v1.Hash{}, fmt.Errorf("%w: %s holds %d images: name one with :TAG or @DIGEST", ErrUnknownImage, l.ref.Path, len(picked))
	}
	m, err := l.manifestBlob(ctx, picked[0].Digest)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	if got := digestOf(m); got != picked[0].Digest {
		return nil, v1.Hash{}, fmt.Errorf("manifest %s: %w: got %s", picked[0].Digest, ErrDigestMismatch, got)
	}
	return resolveManifest(ctx, m, l.platform, l.manifestBlob)
}

func (l *layoutSource) blob(_ context.Context, h v1.Hash) (io.ReadCloser, error) {
	n, err := blobName(h)
	if err != nil {
		return nil, err
	}
	rc, err := l.files.open(n)
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("%w: %s has no blob %s", ErrUnknownImage, l.ref.Path, h)
	}
	return rc, err
}

// dockerArchiveSource is an image in a `docker save` tarball, read with
// go-containerregistry's tarball package.
type dockerArchiveSource struct {
	ref Reference
	img v1.Image
}

func newDockerArchiveSource(r Reference) (*dockerArchiveSource, error) {
	if _, err := os.Stat(r.Path); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnknownImage, err)
	}
	img, err := tarball.ImageFromPath(r.Path, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrUnknownImage, r.Path, err)
	}
	return &dockerArchiveSource{ref: r, img: img}, nil
}

func (d *dockerArchiveSource) close() error { return nil }

func (d *dockerArchiveSource) resolve(context.Context) ([]byte, v1.Hash, error) {
	raw, err := d.img.RawManifest()
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("reading %s: %w", d.ref.Path, err)
	}
	return raw, digestOf(raw), nil
}

func (d *dockerArchiveSource) blob(_ context.Context, h v1.Hash) (io.ReadCloser, error) {
	cfg, err := d.img.ConfigName()
	if err != nil {
		return nil, err
	}
	if h == cfg {
		b, err := d.img.RawConfigFile()
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	l, err := d.img.LayerByDigest(h)
	if err != nil {
		return nil, fmt.Errorf("%w: %s has no blob %s", ErrUnknownImage, d.ref.Path, h)
	}
	return l.Compressed()
}
