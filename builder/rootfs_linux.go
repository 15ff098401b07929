package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// errCrossDevice means linkTree cannot hardlink across file systems.
var errCrossDevice = errors.New("source and destination on different file systems")

// linkTree makes dst a copy of the tree src in which directories are new
// (same owner, mode, xattrs and times) and everything else is a hardlink
// to src's inode. That is safe for a tree that is only ever read (an
// overlay lower) and changed afterwards only by oci's extractor, which
// replaces entries (unlink, then create) and never writes into an existing
// file. It returns errCrossDevice when src and dst are on different file
// systems.
func linkTree(ctx context.Context, src, dst string) error {
	type dirTimes struct {
		path string
		ts   [2]unix.Timespec
		mode uint32
	}
	var dirs []dirTimes
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if !d.IsDir() {
			if err := unix.Linkat(unix.AT_FDCWD, p, unix.AT_FDCWD, target, 0); err != nil {
				if err == unix.EXDEV {
					return errCrossDevice
				}
				return fmt.Errorf("linking %s: %w", rel, err)
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if rel == "." {
			if err := os.MkdirAll(target, 0o700); err != nil {
				return err
			}
		} else if err := unix.Mkdir(target, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", rel, err)
		}
		if err := unix.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("chown %s: %w", rel, err)
		}
		names, err := listXattrs(p)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		for _, name := range names {
			v, err := getXattr(p, name)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			if err := unix.Lsetxattr(target, name, []byte(v), 0); err != nil {
				return fmt.Errorf("%s: setting xattr %s: %w", rel, name, err)
			}
		}
		dirs = append(dirs, dirTimes{path: target, ts: [2]unix.Timespec{st.Atim, st.Mtim}, mode: st.Mode & 0o7777})
		return nil
	})
	if err != nil {
		return err
	}
	// Modes and times last: creating entries changes a directory's mtime,
	// and a read-only mode would be in the way (not for root, but clearly).
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := unix.Chmod(d.path, d.mode); err != nil {
			return err
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, d.path, d.ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return nil
}
