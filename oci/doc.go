// Package oci turns image references into root filesystem directories,
// with no container daemon: it resolves references, pulls blobs into a
// content-addressed store, and flattens layers into a tree.
//
// The package documentation of design decisions is completed in doc.go as
// the package grows.
package oci
