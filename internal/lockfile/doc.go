// Package lockfile holds the crash-safe temporaries that the image store
// (oci) and the builder images (builder) share: a writer works in a
// temporary it holds an flock on, and the kernel drops that lock when the
// writer dies, so RemoveStale removes exactly what crashed writers left and
// never work in progress.
//
// It is a package of its own because both oci and builder need the same
// mechanism and neither may import the other's internals.
package lockfile
