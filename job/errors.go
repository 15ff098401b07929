package job

import "errors"

var (
	// ErrInvalidJob reports a job field that is refused before anything runs.
	ErrInvalidJob = errors.New("invalid job")
	// ErrSrcInfo reports a .SRCINFO that cannot be read.
	ErrSrcInfo = errors.New("invalid .SRCINFO")
	// ErrNoPackages means a build that should have produced packages
	// produced none.
	ErrNoPackages = errors.New("build produced no packages")
	// ErrBadPackage reports a package file the agent refuses to publish
	// or copy: an invalid name, a sparse file.
	ErrBadPackage = errors.New("package refused")
	// ErrPublish reports a package the server did not accept.
	ErrPublish = errors.New("publishing failed")
	// ErrBadConfig reports an option value that cannot be used.
	ErrBadConfig = errors.New("invalid build configuration")
)
