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
