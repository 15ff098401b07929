package oci

// Resolving a reference and fetching its layers into the store.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func (s *Store) source(r Reference) (source, error) {
	switch r.Transport {
	case TransportRegistry:
		return s.client.source(r)
	case TransportOCILayout, TransportOCIArchive:
		return newLayoutSource(r, s.o.platform)
	case TransportDockerArchive:
		return newDockerArchiveSource(r)
	}
	return nil, fmt.Errorf("%w: transport %q", ErrBadReference, r.Transport)
}

// resolved is an image whose manifest and config are in the store.
type resolved struct {
	ref Reference
	img *Image
	src source // nil when resolved from the store alone
}

func (s *Store) progress(p Progress) {
	if s.o.progress != nil {
		s.o.progress(p)
	}
}

// resolve finds the image's manifest (from the source, or from the store
// for a digest reference already pulled, or when the registry cannot be
// reached) and stores its manifest and config.
func (s *Store) resolve(ctx context.Context, r Reference) (_ *resolved, retErr error) {
	refStr := r.String()
	log := s.o.log.WithField("image", refStr)
	// A digest is immutable: no need to ask the registry again.
	if d, ok := r.Name.(interface{ DigestStr() string }); ok && r.Transport == TransportRegistry {
		if h, err := v1.NewHash(d.DigestStr()); err == nil && s.hasBlob(h) {
			if img, err := s.loadImage(refStr, h); err == nil {
				return &resolved{ref: r, img: img}, nil
			}
		}
	}
	src, err := s.source(r)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			src.close()
		}
	}()
	raw, dgst, err := src.resolve(ctx)
	if err != nil {
		if errors.Is(err, ErrUnreachable) && r.Transport == TransportRegistry {
			if rec, ok := s.lookupRef(refStr); ok {
				if img, lerr := s.loadImage(refStr, rec.Digest); lerr == nil {
					log.Warnf("registry unreachable, using the image pulled %s: %v", rec.Pulled.Format(time.RFC3339), err)
					src.close()
					return &resolved{ref: r, img: img}, nil
				}
			}
		}
		return nil, fmt.Errorf("pulling %s: %w", refStr, err)
	}
	// Which endpoint served it — a mirror, or the origin after the
	// mirrors failed — is what an air-gapped site needs to see.
	if rs, ok := src.(*registrySource); ok {
		log.WithFields(map[string]any{"digest": dgst.String(), "from": rs.served()}).Info("resolved")
	}
	s.progress(Progress{Ref: refStr, Phase: PhaseResolve, Blob: dgst, Index: -1})
	if !s.hasBlob(dgst) {
		if err := s.writeBlob(ctx, dgst, int64(len(raw)), bytes.NewReader(raw), nil); err != nil {
			return nil, fmt.Errorf("pulling %s: %w", refStr, err)
		}
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("pulling %s: parsing manifest: %w", refStr, err)
	}
	if err := checkLayers(m); err != nil {
		return nil, fmt.Errorf("pulling %s: %w", refStr, err)
	}
	if !s.hasBlob(m.Config.Digest) {
		rc, err := src.blob(ctx, m.Config.Digest)
		if err != nil {
			return nil, fmt.Errorf("pulling %s: config: %w", refStr, err)
		}
		err = s.writeBlob(ctx, m.Config.Digest, m.Config.Size, io.LimitReader(rc, maxManifestSize+1), nil)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("pulling %s: config: %w", refStr, err)
		}
	}
	img, err := s.loadImage(refStr, dgst)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", refStr, err)
	}
	return &resolved{ref: r, img: img, src: src}, nil
}

// loadImage reads an image's manifest and config from the store.
func (s *Store) loadImage(ref string, h v1.Hash) (*Image, error) {
	raw, err := s.readBlob(h)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing manifest: %w", err)
	}
	if err := checkLayers(m); err != nil {
		return nil, err
	}
	craw, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(craw))
	if err != nil {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	return &Image{Ref: ref, Digest: h, Manifest: m, Config: cfg}, nil
}

// fetch downloads the missing layers of an image, at most parallelDownloads at a time,
// in layer order. ready[i] is closed when layer i is in the store (or
// failed: see errs[i]).
type fetch struct {
	ready   []chan struct{}
	errs    []error
	fetched []bool // layer i was downloaded (and checked) by this fetch
	done    chan struct{}
}

func (s *Store) startFetch(ctx context.Context, res *resolved) *fetch {
	layers := res.img.Manifest.Layers
	f := &fetch{ready: make([]chan struct{}, len(layers)), errs: make([]error, len(layers)), fetched: make([]bool, len(layers)), done: make(chan struct{})}
	todo := make(chan int, len(layers))
	for i, l := range layers {
		f.ready[i] = make(chan struct{})
		if s.hasBlobSize(l.Digest, l.Size) {
			s.progress(Progress{Ref: res.img.Ref, Phase: PhaseCached, Blob: l.Digest, Index: i, Count: len(layers), Done: l.Size, Total: l.Size})
			close(f.ready[i])
			continue
		}
		if res.src == nil {
			f.errs[i] = fmt.Errorf("layer %s: %w (and the registry is unreachable)", shortDigest(l.Digest), ErrNotFound)
			close(f.ready[i])
			continue
		}
		todo <- i
	}
	close(todo)
	var wg sync.WaitGroup
	for range min(s.o.parallelDownloads, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range todo {
				f.errs[i] = s.fetchLayer(ctx, res, i)
				f.fetched[i] = f.errs[i] == nil
				close(f.ready[i])
			}
		}()
	}
	go func() {
		wg.Wait()
		close(f.done)
	}()
	return f
}

func (s *Store) fetchLayer(ctx context.Context, res *resolved, i int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	layers := res.img.Manifest.Layers
	l := layers[i]
	rc, err := res.src.blob(ctx, l.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", shortDigest(l.Digest), err)
	}
	defer rc.Close()
	err = s.writeBlob(ctx, l.Digest, l.Size, rc, func(done int64) {
		s.progress(Progress{Ref: res.img.Ref, Phase: PhaseDownload, Blob: l.Digest, Index: i, Count: len(layers), Done: done, Total: l.Size})
	})
	if err != nil {
		return err
	}
	s.progress(Progress{Ref: res.img.Ref, Phase: PhaseVerified, Blob: l.Digest, Index: i, Count: len(layers), Done: l.Size, Total: l.Size})
	return nil
}

// wait waits for every download and returns the first error.
func (f *fetch) wait() error {
	<-f.done
	return errors.Join(f.errs...)
}
