package oci

func newApplier(dir string, o *unpackOptions) (applier, error) {
	return newExtractor(dir, o)
}
