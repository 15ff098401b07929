package oci

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// EndpointCheck is what one registry endpoint, a mirror or the origin,
// answered a check.
type EndpointCheck struct {
	Host   string // host[:port]
	Mirror bool
	// Err is nil when the endpoint answered (CheckRegistry) or has the
	// image (CheckImage).
	Err error
}

// Label is "mirror HOST" or the origin's host.
func (c EndpointCheck) Label() string {
	if c.Mirror {
		return "mirror " + c.Host
	}
	return c.Host
}

// CheckImage asks every endpoint of the registry reference ref — its
// mirrors in order, then the origin — for the image's manifest (for the
// platform), with the logins, CA bundles and insecure hosts of opts, as a
// pull does; it downloads no layer and writes nothing. served is the index
// of the endpoint a pull would use (the first that has the image), -1 when
// none has it. A reference that is not a registry's (oci:, archives) is an
// ErrBadReference.
func CheckImage(ctx context.Context, ref string, opts ...Option) (checks []EndpointCheck, served int, err error) {
	o, r, err := checkOptions(ref, opts)
	if err != nil {
		return nil, -1, err
	}
	c, err := newRegistryClient(o)
	if err != nil {
		return nil, -1, err
	}
	src, err := c.source(r)
	if err != nil {
		return nil, -1, err
	}
	served = -1
	for i, e := range src.endpoints {
		_, _, err := e.resolve(ctx, o.platform)
		if err != nil {
			if ctx.Err() != nil {
				return checks, served, ctx.Err()
			}
			err = fmt.Errorf("%w: %s", classify(err), flatten(err))
		} else if served < 0 {
			served = i
		}
		checks = append(checks, EndpointCheck{Host: e.host, Mirror: e.mirror, Err: err})
	}
	return checks, served, nil
}

// CheckRegistry asks every endpoint of the registry host — its mirrors in
// order, then the host itself — whether it answers the registry API (GET
// /v2/; a login challenge counts as an answer), with the CA bundles and
// insecure hosts of opts. It writes nothing.
func CheckRegistry(ctx context.Context, host string, opts ...Option) ([]EndpointCheck, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	host, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	c, err := newRegistryClient(o)
	if err != nil {
		return nil, err
	}
	hosts := append(append([]string(nil), o.mirrors[host]...), host)
	var checks []EndpointCheck
	for i, h := range hosts {
		var nopts []name.Option
		if o.insecure[h] {
			nopts = append(nopts, name.Insecure)
		}
		reg, err := name.NewRegistry(h, nopts...)
		if err == nil {
			_, err = transport.Ping(ctx, reg, c.transport)
		}
		if err != nil {
			if ctx.Err() != nil {
				return checks, ctx.Err()
			}
			err = fmt.Errorf("%w: %s", classify(err), flatten(err))
		}
		checks = append(checks, EndpointCheck{Host: h, Mirror: i < len(hosts)-1, Err: err})
	}
	return checks, nil
}

// checkOptions applies opts and parses a registry reference.
func checkOptions(ref string, opts []Option) (*options, Reference, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, Reference{}, err
		}
	}
	r, err := ParseReference(ref)
	if err != nil {
		return nil, Reference{}, err
	}
	if r.Transport != TransportRegistry {
		return nil, Reference{}, fmt.Errorf("%w %q: not a registry reference", ErrBadReference, ref)
	}
	return o, r, nil
}
