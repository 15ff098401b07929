//go:build !linux

package oci

func bootID() string { return "" }
