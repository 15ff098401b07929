package lockfile

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteOptions say how Write makes its temporary and publishes it.
type WriteOptions struct {
	// TmpDir is where the temporary is made: a directory whose stale
	// entries RemoveStale collects. "" means the destination's directory
	// (then a crash can leave a ".tmp-" file beside it).
	TmpDir string
	// Perm is the published file's mode (0o644 if zero), set whatever the
	// umask.
	Perm fs.FileMode
	// Sync flushes the file before the rename, so that a power loss
	// leaves the old or the new content, never an empty file.
	Sync bool
}

// Write replaces the file at dst with what fill writes, atomically: fill
// writes a temporary that this process holds a lock on (so RemoveStale
// spares it while it is written and collects it if the process dies), and
// the temporary is renamed to dst only when fill succeeded. When fill
// fails nothing is published and the temporary is removed.
//
// This is the one atomic writer of the store (blobs, refs.json, rootfs
// marks), OCI layouts (blobs, index.json) and builders (meta.json).
func Write(dst string, o WriteOptions, fill func(w *os.File) error) (retErr error) {
	dir := o.TmpDir
	if dir == "" {
		dir = filepath.Dir(dst)
	}
	f, err := CreateTemp(dir, ".tmp-"+filepath.Base(dst)+"-")
	if err != nil {
		return err
	}
	defer func() {
		f.Close()
		if retErr != nil {
			os.Remove(f.Name())
		}
	}()
	if err := fill(f); err != nil {
		return err
	}
	perm := o.Perm
	if perm == 0 {
		perm = 0o644
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if o.Sync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return err
	}
	return nil
}

// WriteFile is Write of the bytes b.
func WriteFile(dst string, b []byte, o WriteOptions) error {
	return Write(dst, o, func(w *os.File) error {
		_, err := io.Copy(w, bytes.NewReader(b))
		return err
	})
}
