//go:build !linux

package oci

import "errors"

func syncfs(string) error { return errors.ErrUnsupported }

func bootID() string { return "" }
