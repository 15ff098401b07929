package vieter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Package is a package file to publish.
type Package struct {
	// Name, Version ([epoch:]pkgver-pkgrel) and Arch, as its file name says
	// (see ParsePackageFileName).
	Name, Version, Arch string
	File                io.ReaderAt
	Size                int64
}

// ParsePackageFileName splits a package file name
// "<name>-<[epoch:]pkgver>-<pkgrel>-<arch>.pkg.tar[.<ext>]" into the
// package's name, version and arch.
func ParsePackageFileName(file string) (name, version, arch string, err error) {
	base, _, found := strings.Cut(file, ".pkg.tar")
	parts := strings.Split(base, "-")
	if !found || len(parts) < 4 {
		return "", "", "", fmt.Errorf("%q is not a package file name", file)
	}
	n := len(parts)
	name = strings.Join(parts[:n-3], "-")
	version, arch = parts[n-3]+"-"+parts[n-2], parts[n-1]
	if name == "" || parts[n-3] == "" || parts[n-2] == "" || arch == "" {
		return "", "", "", fmt.Errorf("%q is not a package file name", file)
	}
	return name, version, arch, nil
}

// How a publish was confirmed (Confirmation.By).
const (
	// ConfirmedByAnswer: the publish answer was the envelope naming the
	// package's name and version.
	ConfirmedByAnswer = "answer"
	// ConfirmedByCheck: the answer proved nothing, and the repository
	// then had the package (HasVersion).
	ConfirmedByCheck = "check"
)

// Confirmation says how the server confirmed a published package.
type Confirmation struct {
	By       string // ConfirmedByAnswer or ConfirmedByCheck
	Attempts int    // publish requests sent
}

// PublishConfirmed publishes pkg to repo and returns only once the server
// confirmed it: by a publish answer naming the package's name and
// version, or — when the answer proves nothing (cut, malformed, naming
// another package) — by HasVersion in the arch-repo of the package's arch
// (arch, the agent's, for packages of arch "any"). A package that is not
// there is published again. r says how often and how long; the error of a
// package that could not be confirmed wraps ErrNotConfirmed or the last
// failure.
func (c *Client) PublishConfirmed(ctx context.Context, repo, arch string, pkg Package, r Retry) (Confirmation, error) {
	var conf Confirmation
	checkArch := pkg.Arch
	if checkArch == "any" {
		checkArch = arch
	}
	err := r.Do(ctx, func(ctx context.Context) error {
		conf.Attempts++
		p, err := c.Publish(ctx, repo, pkg.File, pkg.Size)
		if err == nil {
			if p.Name == pkg.Name && p.Version == pkg.Version {
				conf.By = ConfirmedByAnswer
				return nil
			}
			err = fmt.Errorf("publish: %w: the answer names %q %q", ErrMalformed, p.Name, p.Version)
		}
		if !Sent(err) && !errors.Is(err, ErrMalformed) {
			return err // the server answered with a status, or never got the request
		}
		// The server may have stored the package: ask the repository.
		has, cerr := c.HasVersion(ctx, repo, checkArch, pkg.Name, pkg.Version)
		switch {
		case cerr != nil:
			return fmt.Errorf("%w (and the check failed: %w)", err, cerr)
		case has:
			conf.By = ConfirmedByCheck
			return nil
		}
		return fmt.Errorf("%w: %s %s is not in %s/%s after: %w", ErrNotConfirmed, pkg.Name, pkg.Version, repo, checkArch, err)
	})
	return conf, err
}
