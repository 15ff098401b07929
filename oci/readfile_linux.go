package oci

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// ReadRootfsFile reads the file name (relative to the root, e.g.
// "etc/pacman.conf") from the unpacked rootfs of ref in the store at dir,
// at most limit bytes, and returns it with the image's manifest digest.
// The path is resolved inside the tree (a symbolic link cannot lead out of
// it), only a regular file is read, and nothing is changed: it may run
// beside an agent, and on a store that does not exist (ErrNotFound). An
// image pulled but not unpacked is ErrNotFound too.
func ReadRootfsFile(dir, ref, name string, limit int64) ([]byte, v1.Hash, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	s := &Store{dir: abs, o: defaultOptions(), boot: bootID()}
	rec, ok := s.lookupRef(r.String())
	if !ok || !s.validRootfs(s.rootfsPath(rec.Digest)) {
		return nil, v1.Hash{}, fmt.Errorf("%s: %w (or not unpacked)", ref, ErrNotFound)
	}
	root, err := unix.Open(s.rootfsPath(rec.Digest), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, rec.Digest, err
	}
	defer unix.Close(root)
	fd, err := openInRoot(root, name, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, rec.Digest, fmt.Errorf("%s of %s: %w", name, ref, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, rec.Digest, err
	}
	if !fi.Mode().IsRegular() {
		return nil, rec.Digest, fmt.Errorf("%s of %s: not a regular file", name, ref)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, rec.Digest, err
	}
	if int64(len(b)) > limit {
		return nil, rec.Digest, fmt.Errorf("%s of %s: larger than %d bytes", name, ref, limit)
	}
	return b, rec.Digest, nil
}
