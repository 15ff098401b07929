package oci

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/docker/cli/cli/config"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// registryClient holds what every registry pull of a store shares.
type registryClient struct {
	o         *options
	transport http.RoundTripper
	keychain  authn.Keychain
}

func newRegistryClient(o *options) (*registryClient, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	for _, p := range o.caBundles {
		pem, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading ca bundle: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca bundle %s: no PEM certificate", p)
		}
	}
	dial := o.dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	base := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ReadBufferSize:        256 << 10,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}
	insecure := base.Clone()
	insecure.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for per host
	var docker authn.Keychain = authn.DefaultKeychain
	if o.dockerConfig != "" {
		docker = configFileKeychain(o.dockerConfig)
	}
	return &registryClient{
		o:         o,
		transport: &hostTransport{secure: base, insecure: insecure, hosts: o.insecure},
		keychain:  &keychain{creds: o.creds, docker: docker},
	}, nil
}

// hostTransport skips TLS verification for insecure hosts only.
type hostTransport struct {
	secure, insecure http.RoundTripper
	hosts            map[string]bool
}

func (t *hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.hosts[req.URL.Host] {
		return t.insecure.RoundTrip(req)
	}
	return t.secure.RoundTrip(req)
}

// keychain resolves explicit credentials first, then the Docker config.
type keychain struct {
	creds  map[string]credential
	docker authn.Keychain
}

func (k *keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if c, ok := k.creds[r.RegistryStr()]; ok {
		return &authn.Basic{Username: c.user, Password: c.pass}, nil
	}
	return k.docker.Resolve(r)
}

// configFileKeychain reads a Docker config.json at a given path (auths and
// credential helpers), looked up the way Docker does.
type configFileKeychain string

func (p configFileKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	f, err := os.Open(string(p))
	if err != nil {
		return nil, fmt.Errorf("reading docker config: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("reading docker config %s: %w", p, err)
	}
	for _, key := range []string{r.String(), r.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, err := cf.GetAuthConfig(key)
		if err != nil {
			return nil, fmt.Errorf("docker config: %w", err)
		}
		if cfg.Username != "" || cfg.Password != "" || cfg.Auth != "" || cfg.IdentityToken != "" || cfg.RegistryToken != "" {
			return authn.FromConfig(authn.AuthConfig{
				Username:      cfg.Username,
				Password:      cfg.Password,
				Auth:          cfg.Auth,
				IdentityToken: cfg.IdentityToken,
				RegistryToken: cfg.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}

// endpoint is a mirror or the origin registry for one reference.
type endpoint struct {
	host   string
	mirror bool
	ref    name.Reference
	puller *remote.Puller
}

// registrySource pulls from a registry's mirrors, in order, then from the
// registry itself.
type registrySource struct {
	c         *registryClient
	ref       Reference
	endpoints []*endpoint
	used      int // the endpoint that served the manifest
}

func (c *registryClient) source(r Reference) (*registrySource, error) {
	origin := r.host()
	hosts := append(append([]string(nil), c.o.mirrors[origin]...), origin)
	s := &registrySource{c: c, ref: r}
	for i, h := range hosts {
		ref, err := endpointRef(h, r.Name, c.o.insecure[h])
		if err != nil {
			return nil, err
		}
		p, err := remote.NewPuller(
			remote.WithTransport(c.transport),
			remote.WithAuthFromKeychain(c.keychain),
			remote.WithPlatform(c.o.platform),
			remote.WithUserAgent("vagent"),
			remote.WithRetryBackoff(remote.Backoff{Duration: 250 * time.Millisecond, Factor: 3, Jitter: 0.1, Steps: 3}),
		)
		if err != nil {
			return nil, err
		}
		s.endpoints = append(s.endpoints, &endpoint{host: h, mirror: i < len(hosts)-1, ref: ref, puller: p})
	}
	return s, nil
}

// endpointRef is ref with its registry replaced by host.
func endpointRef(host string, ref name.Reference, insecure bool) (name.Reference, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	repo := host + "/" + ref.Context().RepositoryStr()
	switch t := ref.(type) {
	case name.Digest:
		return name.NewDigest(repo+"@"+t.DigestStr(), opts...)
	case name.Tag:
		return name.NewTag(repo+":"+t.TagStr(), opts...)
	default:
		return name.ParseReference(repo+":"+ref.Identifier(), opts...)
	}
}

func (s *registrySource) close() error { return nil }

func (e *endpoint) label() string {
	if e.mirror {
		return "mirror " + e.host
	}
	return e.host
}

// served names the endpoint that served the manifest: "mirror HOST", or
// the origin's host, with "(origin)" when mirrors were configured.
func (s *registrySource) served() string {
	e := s.endpoints[s.used]
	if !e.mirror && len(s.endpoints) > 1 {
		return e.host + " (origin)"
	}
	return e.label()
}

func (s *registrySource) resolve(ctx context.Context) ([]byte, v1.Hash, error) {
	var tried []string
	var last error
	for i, e := range s.endpoints {
		raw, d, err := e.resolve(ctx, s.c.o.platform)
		if err == nil {
			s.used = i
			if i > 0 {
				s.c.o.log.WithFields(map[string]any{"image": s.ref.String(), "registry": e.host}).Infof("pulling from %s after %s", e.label(), strings.Join(tried, "; "))
			}
			return raw, d, nil
		}
		if ctx.Err() != nil {
			return nil, v1.Hash{}, ctx.Err()
		}
		last = classify(err)
		tried = append(tried, fmt.Sprintf("%s: %s", e.label(), flatten(err)))
		s.c.o.log.WithFields(map[string]any{"image": s.ref.String(), "registry": e.host}).Debugf("resolving: %v", err)
	}
	return nil, v1.Hash{}, pullError(last, tried)
}

// pullError makes the error of a failed pull: the kind of failure from the
// origin (the last endpoint), and what every endpoint said.
func pullError(kind error, tried []string) error {
	if len(tried) == 1 {
		return fmt.Errorf("%w: %s", kind, tried[0])
	}
	return fmt.Errorf("%w: tried %s", kind, strings.Join(tried, "; "))
}

func (e *endpoint) resolve(ctx context.Context, platform v1.Platform) ([]byte, v1.Hash, error) {
	desc, err := e.puller.Get(ctx, e.ref)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	if len(desc.Manifest) > maxManifestSize {
		return nil, v1.Hash{}, fmt.Errorf("manifest larger than %d bytes", maxManifestSize)
	}
	return resolveManifest(ctx, desc.Manifest, platform, func(ctx context.Context, h v1.Hash) ([]byte, error) {
		d, err := e.puller.Get(ctx, e.ref.Context().Digest(h.String()))
		if err != nil {
			return nil, err
		}
		return d.Manifest, nil
	})
}

func (s *registrySource) blob(ctx context.Context, h v1.Hash) (io.ReadCloser, error) {
	order := append([]*endpoint{s.endpoints[s.used]}, s.endpoints[:s.used]...)
	order = append(order, s.endpoints[s.used+1:]...)
	var tried []string
	var last error
	for _, e := range order {
		l, err := e.puller.Layer(ctx, e.ref.Context().Digest(h.String()))
		if err == nil {
			var rc io.ReadCloser
			if rc, err = l.Compressed(); err == nil {
				return verifyErrors{rc}, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		last = classify(err)
		tried = append(tried, fmt.Sprintf("%s: %s", e.label(), flatten(err)))
	}
	return nil, pullError(last, tried)
}

// classify returns the sentinel for a registry error.
func classify(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return ErrUnauthorized
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return ErrUnknownImage
			}
		}
		switch terr.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return ErrUnauthorized
		case http.StatusNotFound:
			return ErrUnknownImage
		}
		return ErrUnreachable
	}
	for _, s := range []error{ErrUnknownImage, ErrUnauthorized, ErrDigestMismatch, ErrUnsupportedMedia} {
		if errors.Is(err, s) {
			return s
		}
	}
	return ErrUnreachable
}

// flatten returns err's message on one line, its whitespace runs (line
// breaks of a registry's answer included) made single spaces.
func flatten(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// verifyErrors marks go-containerregistry's digest check failures (it
// checks blobs as they are read, before the store does) as
// ErrDigestMismatch.
type verifyErrors struct{ io.ReadCloser }

func (v verifyErrors) Read(b []byte) (int, error) {
	n, err := v.ReadCloser.Read(b)
	if err != nil && err != io.EOF && strings.Contains(err.Error(), "error verifying") {
		err = fmt.Errorf("%w: %w", ErrDigestMismatch, err)
	}
	return n, err
}
