package vieterserver

import "errors"

var (
	// ErrUnknownTarget is returned by Enqueue for a target that was never added.
	ErrUnknownTarget = errors.New("unknown target")
	// ErrBadPackage is returned when a published file is not a package the
	// server can read.
	ErrBadPackage = errors.New("bad package")
)
