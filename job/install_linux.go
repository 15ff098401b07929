package job

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/internal/pacman"
)

// installDir is the control directory's copy of the packages of
// WithInstall, which the script installs with pacman -U before it resolves
// the build's dependencies.
const installDir = "install"

// CheckInstall checks a package file for WithInstall as the agent checks
// a package it publishes: a package file's name (pacman.ValidatePackageFile),
// a regular file (a link is not followed), at most MaxPackageSize bytes,
// no holes.
func CheckInstall(path string) error {
	f, err := openPackage(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// openPackage opens the package file path, checked (see CheckInstall).
func openPackage(path string) (*os.File, error) {
	name := filepath.Base(path)
	if err := pacman.ValidatePackageFile(name); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Dir(path), err)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	f, err := openIn(dir, name)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%s is a symbolic link: give the file it names", path)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", filepath.Dir(path), err)
	}
	return f, nil
}

// copyInstall copies the packages of WithInstall into the control
// directory dir, readable by the build (the control directory is mounted
// read-only): what the build installs is what was checked.
func (b *Runner) copyInstall(dir string) error {
	if len(b.opts.install) == 0 {
		return nil
	}
	to := filepath.Join(dir, installDir)
	if err := os.Mkdir(to, 0o755); err != nil {
		return err
	}
	for _, p := range b.opts.install {
		if err := copyPackage(p, filepath.Join(to, filepath.Base(p))); err != nil {
			return err
		}
	}
	return nil
}

func copyPackage(src, dst string) (retErr error) {
	in, err := openPackage(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); retErr == nil {
			retErr = cerr
		}
	}()
	_, err = io.Copy(out, io.LimitReader(in, MaxPackageSize))
	return err
}
