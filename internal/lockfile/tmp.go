package lockfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// RemoveStale removes the entries of dir whose writer is gone: those no
// process holds a lock on. It returns how many it removed.
func RemoveStale(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		ok, err := Lock(f, true, false)
		if err == nil && ok {
			if err := RemoveTree(p); err != nil {
				f.Close()
				return n, fmt.Errorf("removing stale %s: %w", p, err)
			}
			n++
		}
		f.Close()
	}
	return n, nil
}

// RemoveTree removes a tree even if it has directories without write
// permission (as a rootfs may).
func RemoveTree(p string) error {
	err := os.RemoveAll(p)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// createAttempts bounds CreateTemp's and MkdirTemp's retries: each retry
// means a concurrent RemoveStale removed the entry in the moment between
// its creation and its lock, which a second attempt does not meet again
// unless cleanups run back to back.
const createAttempts = 20

// CreateTemp creates a new file in dir (pattern as os.CreateTemp's) and
// returns it locked exclusively, so that RemoveStale in another process
// leaves it alone. A cleaner can take the lock in the moment between the
// file's creation and the writer's lock and remove the file: the writer
// then finds its name gone or naming another file, and creates another.
func CreateTemp(dir, pattern string) (*os.File, error) {
	for range createAttempts {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		if _, err := Lock(f, true, true); err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, err
		}
		if stillAt(f, f.Name()) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("creating a temporary file in %s: a concurrent cleanup removed it %d times", dir, createAttempts)
}

// MkdirTemp is CreateTemp for a directory: it returns the new directory's
// path and the open directory, locked exclusively until it is closed.
func MkdirTemp(dir, pattern string) (string, *os.File, error) {
	for range createAttempts {
		p, err := os.MkdirTemp(dir, pattern)
		if err != nil {
			return "", nil, err
		}
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed before we opened it
		}
		if err != nil {
			os.Remove(p)
			return "", nil, err
		}
		if _, err := Lock(f, true, true); err != nil {
			f.Close()
			os.Remove(p)
			return "", nil, err
		}
		if stillAt(f, p) {
			return p, f, nil
		}
		f.Close()
	}
	return "", nil, fmt.Errorf("creating a temporary directory in %s: a concurrent cleanup removed it %d times", dir, createAttempts)
}

// stillAt reports whether path still names f's file.
func stillAt(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(path)
	return err == nil && os.SameFile(a, b)
}
