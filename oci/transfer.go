package oci

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// Image files: an OCI layout directory, a tarball of one, or `docker save`
// output. Load takes them into the store under a registry reference;
// Push copies them (or an image of the store) into a registry.

// containerdNameAnnotation is the index annotation containerd and
// `docker save` (moby 25+) write with an image's full name.
const containerdNameAnnotation = "io.containerd.image.name"

// LocalReference returns the reference of an image file: s itself when it
// has a transport (oci:, oci-archive:, docker-archive:), otherwise the
// path s read as what it holds — a directory with an oci-layout file is an
// OCI layout, a tar with an oci-layout entry an OCI archive, a tar with a
// manifest.json `docker save` output. ErrBadReference for anything else
// (a registry reference included).
func LocalReference(s string) (Reference, error) {
	if r, err := ParseReference(s); err == nil && r.Transport != TransportRegistry {
		return r, nil
	}
	fi, err := os.Stat(s)
	if err != nil {
		return Reference{}, fmt.Errorf("%w %q: not an image file: %w", ErrBadReference, s, err)
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return Reference{}, err
	}
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(abs, "oci-layout")); err != nil {
			return Reference{}, fmt.Errorf("%w %q: a directory without oci-layout is not an OCI image layout", ErrBadReference, s)
		}
		return Reference{Transport: TransportOCILayout, Path: abs}, nil
	}
	names, err := tarNames(abs, "oci-layout", "manifest.json")
	if err != nil {
		return Reference{}, fmt.Errorf("%w %q: %w", ErrBadReference, s, err)
	}
	switch {
	case names["oci-layout"]:
		return Reference{Transport: TransportOCIArchive, Path: abs}, nil
	case names["manifest.json"]:
		return Reference{Transport: TransportDockerArchive, Path: abs}, nil
	}
	return Reference{}, fmt.Errorf("%w %q: a tar without oci-layout or manifest.json is no image archive", ErrBadReference, s)
}

// tarNames tells which of want are regular files at the top of the tar at
// p (reading headers only).
func tarNames(p string, want ...string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	found := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return found, nil
		}
		if err != nil {
			return nil, fmt.Errorf("not a tar archive: %w", err)
		}
		n := path.Clean(strings.TrimPrefix(hdr.Name, "/"))
		for _, w := range want {
			if n == w && hdr.Typeflag == tar.TypeReg {
				found[w] = true
			}
		}
	}
}

// fileName returns the registry reference an image file names for its
// image, "" when it names none: the repository tag of `docker save`
// output, or an OCI index entry's io.containerd.image.name or a
// org.opencontainers.image.ref.name that is a full name (skopeo writes a
// bare tag there, which names no repository).
func fileName(r Reference) string {
	switch r.Transport {
	case TransportDockerArchive:
		m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(r.Path) })
		if err != nil || len(m) != 1 || len(m[0].RepoTags) == 0 {
			return ""
		}
		return m[0].RepoTags[0]
	case TransportOCILayout, TransportOCIArchive:
		src, err := newLayoutSource(r, v1.Platform{})
		if err != nil {
			return ""
		}
		defer src.close()
		raw, err := src.readSmall("index.json")
		if err != nil {
			return ""
		}
		idx, err := v1.ParseIndexManifest(strings.NewReader(string(raw)))
		if err != nil {
			return ""
		}
		var names []string
		for _, d := range idx.Manifests {
			if (r.Tag != "" && d.Annotations[refNameAnnotation] != r.Tag) || (r.Digest != "" && d.Digest.String() != r.Digest) {
				continue
			}
			n := d.Annotations[containerdNameAnnotation]
			if ref := d.Annotations[refNameAnnotation]; n == "" && strings.Contains(ref, "/") {
				n = ref
			}
			if n != "" {
				names = append(names, n)
			}
		}
		if len(names) == 1 {
			return names[0]
		}
	}
	return ""
}

// Load copies the image of an image file (see LocalReference: oci:DIR,
// oci-archive:FILE, docker-archive:FILE, or a plain path) into the store
// and records it under the registry reference as, so that pulls and
// builds naming as find it: a pull asks as's registry first and uses the
// loaded image when that registry cannot be reached, as for any image
// pulled before. An empty as takes the name the file gives its image
// (`docker save`'s repository tag; an OCI index's full image name); a
// file that names none needs as. Every blob is checked against its
// digest. The returned Image's Ref is as, canonical.
func (s *Store) Load(ctx context.Context, file, as string) (*Image, error) {
	src, err := LocalReference(file)
	if err != nil {
		return nil, err
	}
	if as == "" {
		if as = fileName(src); as == "" {
			return nil, fmt.Errorf("%w: %s names no registry reference for its image: give one", ErrBadReference, src)
		}
	}
	dst, err := ParseReference(as)
	if err != nil {
		return nil, err
	}
	if dst.Transport != TransportRegistry {
		return nil, fmt.Errorf("%w %q: an image is loaded under a registry reference", ErrBadReference, as)
	}
	res, done, err := s.resolveLocked(ctx, src.String())
	if err != nil {
		return nil, err
	}
	defer done()
	if d, ok := dst.Name.(name.Digest); ok && d.DigestStr() != res.img.Digest.String() {
		return nil, fmt.Errorf("%w: %s is the image %s, not %s", ErrDigestMismatch, src, res.img.Digest, d.DigestStr())
	}
	if err := s.startFetch(ctx, res).wait(); err != nil {
		return nil, fmt.Errorf("loading %s: %w", src, err)
	}
	if s.o.sync {
		if err := lockfile.SyncFS(s.dir); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			return nil, fmt.Errorf("syncing store: %w", err)
		}
	}
	img := *res.img
	img.Ref = dst.String()
	if err := s.recordRef(img.Ref, img.Digest); err != nil {
		return nil, err
	}
	return &img, nil
}

// Push copies an image into the registry reference dst with
// go-containerregistry's remote.Write, through the store's registry
// settings (insecure hosts, CA bundles, credentials; mirrors serve pulls,
// not pushes), or into the OCI image layout of dst "oci:DIR[:TAG]" (TAG
// defaults to src's tag, else "latest"; the entry carries src's registry
// name as io.containerd.image.name, which Load takes), and returns the
// digest of the manifest pushed. src is a reference of the store (as
// `vagent image ls` lists it; the image is not pulled) or an image file
// (see LocalReference), whose blobs are checked into the store on the way
// and dropped afterwards unless a reference of the store uses them. A
// digest dst must be the image's digest.
func (s *Store) Push(ctx context.Context, src, dst string) (v1.Hash, error) {
	dr, err := ParseReference(dst)
	if err != nil {
		return v1.Hash{}, err
	}
	if (dr.Transport != TransportRegistry && dr.Transport != TransportOCILayout) || dr.Digest != "" {
		return v1.Hash{}, fmt.Errorf("%w %q: push writes to a registry or to oci:DIR[:TAG]", ErrBadReference, dst)
	}
	gc, err := s.lockGC(ctx, false)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, srcName, loaded, err := s.pushSource(ctx, src)
	if err != nil {
		gc.Close()
		return v1.Hash{}, err
	}
	if dr.Transport == TransportOCILayout {
		err = s.writeLayout(ctx, dr, srcName, digest)
	} else {
		err = s.write(ctx, dr, digest)
	}
	gc.Close()
	if loaded {
		if cerr := s.dropUnused(ctx, digest); err == nil && cerr != nil {
			s.o.log.WithError(cerr).Warn("removing the pushed file's blobs from the store")
		}
	}
	if err != nil {
		return v1.Hash{}, err
	}
	return digest, nil
}

// pushSource finds the image Push copies: a reference of the store (and
// its name), or an image file fetched into the store (loaded). The caller
// holds the gc lock, shared.
func (s *Store) pushSource(ctx context.Context, src string) (digest v1.Hash, ref *Reference, loaded bool, err error) {
	// A path that exists is a file, whatever else it may parse as
	// (go-containerregistry reads "/x/image.tar" as a repository).
	if _, serr := os.Stat(src); serr != nil {
		if r, err := ParseReference(src); err == nil && r.Transport == TransportRegistry {
			rec, ok := s.lookupRef(r.String())
			if !ok {
				return v1.Hash{}, nil, false, fmt.Errorf("%w: %s (pull or load it first)", ErrNotFound, r)
			}
			return rec.Digest, &r, false, nil
		}
	}
	lr, err := LocalReference(src)
	if err != nil {
		return v1.Hash{}, nil, false, err
	}
	res, err := s.resolve(ctx, lr)
	if err != nil {
		return v1.Hash{}, nil, false, err
	}
	defer func() {
		if res.src != nil {
			res.src.close()
		}
	}()
	if err := s.startFetch(ctx, res).wait(); err != nil {
		return v1.Hash{}, nil, true, fmt.Errorf("reading %s: %w", lr, err)
	}
	return res.img.Digest, nil, true, nil
}

// write pushes the image of the store whose manifest digest is h to r.
func (s *Store) write(ctx context.Context, r Reference, h v1.Hash) error {
	if d, ok := r.Name.(name.Digest); ok && d.DigestStr() != h.String() {
		return fmt.Errorf("%w: the image is %s, not %s", ErrDigestMismatch, h, d.DigestStr())
	}
	img, err := s.Image(h)
	if err != nil {
		return err
	}
	host := r.host()
	ref, err := endpointRef(host, r.Name, s.o.insecure[host])
	if err != nil {
		return err
	}
	err = remote.Write(ref, img,
		remote.WithContext(ctx),
		remote.WithTransport(s.client.transport),
		remote.WithAuthFromKeychain(s.client.keychain),
		remote.WithUserAgent("vagent"),
		remote.WithJobs(s.o.jobs),
		remote.WithRetryBackoff(remote.Backoff{Duration: 250 * time.Millisecond, Factor: 3, Jitter: 0.1, Steps: 3}),
	)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("pushing %s: %w: %s", r, classify(err), flatten(err))
	}
	return nil
}

// writeLayout puts the image of the store whose manifest digest is h
// into the OCI layout of r, copying its blobs (the layout may be on a
// removable disk: nothing is hardlinked to the store), named sr when the
// image came from the store under that name.
func (s *Store) writeLayout(ctx context.Context, r Reference, sr *Reference, h v1.Hash) error {
	img, err := s.Image(h)
	if err != nil {
		return err
	}
	tag, ann := r.Tag, map[string]string{}
	if sr != nil {
		ann[containerdNameAnnotation] = sr.String()
		if t, ok := sr.Name.(name.Tag); ok && tag == "" {
			tag = t.TagStr()
		}
	}
	if tag == "" {
		tag = "latest"
	}
	l, err := OpenLayout(r.Path, nil)
	if err != nil {
		return err
	}
	if err := l.Put(ctx, img, tag, ann); err != nil {
		return fmt.Errorf("writing %s: %w", r, err)
	}
	return nil
}

// dropUnused removes the blobs of the image h unless a reference of the
// store uses them.
func (s *Store) dropUnused(ctx context.Context, h v1.Hash) error {
	gc, err := s.lockGC(ctx, true)
	if err != nil {
		return err
	}
	defer gc.Close()
	_, err = s.collect(map[v1.Hash]bool{h: true})
	return err
}
