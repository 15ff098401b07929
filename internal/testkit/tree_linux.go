package testkit

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Building a layer from a directory tree: a snapshot records what every
// path looks like (inode, type and mode, size, ctime), so that the
// difference between two snapshots of the same tree becomes a layer the
// way Docker's overlay differ makes one: new and changed paths as entries,
// deleted paths as whiteouts (.wh.NAME) and replaced directories as opaque
// markers (.wh..wh..opq) followed by their whole new content.

// pseudoDirs are kept as empty directories: their content belongs to the
// running system (device nodes, proc and sysfs mounts), not to the image.
var pseudoDirs = map[string]bool{"dev": true, "proc": true, "sys": true}

type fileState struct {
	ino   uint64
	mode  uint32
	size  int64
	ctime int64
}

// tree is a snapshot of a directory tree. Paths are slash-separated and
// relative to the root, in lexical walk order (parents before children).
type tree struct {
	root  string
	order []string
	files map[string]fileState
}

func snapshotTree(root string) (*tree, error) {
	t := &tree{root: root, files: map[string]fileState{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			return nil // sockets cannot be archived
		}
		t.order = append(t.order, rel)
		t.files[rel] = fileState{ino: st.Ino, mode: st.Mode, size: st.Size, ctime: st.Ctim.Nano()}
		if d.IsDir() && pseudoDirs[rel] {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", root, err)
	}
	return t, nil
}

// writeTreeLayer writes to tw the layer that turns before into after (both
// snapshots of the same root): every path of after when before is nil,
// otherwise new and changed paths, whiteouts for deleted paths, and for
// each directory in opaque (replaced wholesale) an opaque marker plus all
// of its content.
func writeTreeLayer(tw *tar.Writer, before, after *tree, opaque map[string]bool) error {
	// Deleted paths: one whiteout for the topmost deleted path, in its
	// parent, unless the parent is itself opaque (the marker covers it).
	whiteouts := map[string][]string{}
	if before != nil {
		for _, p := range before.order {
			if _, ok := after.files[p]; ok {
				continue
			}
			dir := parentDir(p)
			if _, ok := after.files[dir]; (ok || dir == "") && !opaque[dir] {
				whiteouts[dir] = append(whiteouts[dir], path.Base(p))
			}
		}
	}
	links := map[[2]uint64]string{}
	emitDir := func(dir string) error {
		if opaque[dir] {
			if err := writeMarker(tw, path.Join(dir, ".wh..wh..opq")); err != nil {
				return err
			}
		}
		for _, n := range whiteouts[dir] {
			if err := writeMarker(tw, path.Join(dir, ".wh."+n)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := emitDir(""); err != nil {
		return err
	}
	for _, p := range after.order {
		st := after.files[p]
		old, existed := fileState{}, false
		if before != nil {
			old, existed = before.files[p]
		}
		if before == nil || !existed || old != st || inOpaque(opaque, p) {
			if err := writeEntry(tw, after.root, p, links); err != nil {
				return err
			}
		}
		if st.mode&unix.S_IFMT == unix.S_IFDIR {
			if err := emitDir(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func parentDir(p string) string {
	if d := path.Dir(p); d != "." {
		return d
	}
	return ""
}

// inOpaque reports whether p is an opaque directory or inside one.
func inOpaque(opaque map[string]bool, p string) bool {
	for ; p != ""; p = parentDir(p) {
		if opaque[p] {
			return true
		}
	}
	return false
}

func writeMarker(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, ModTime: kitEpoch})
}

// writeEntry archives root/rel: numeric owners only, mtime to the second,
// extended attributes as PAX records, hardlinks within the layer as links
// to the first path seen.
func writeEntry(tw *tar.Writer, root, rel string, links map[[2]uint64]string) error {
	full := filepath.Join(root, filepath.FromSlash(rel))
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return fmt.Errorf("archiving %s: %w", rel, err)
	}
	h := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, 0),
	}
	xattrs, err := readXattrs(full)
	if err != nil {
		return fmt.Errorf("archiving %s: %w", rel, err)
	}
	if len(xattrs) > 0 {
		h.Format = tar.FormatPAX
		h.PAXRecords = map[string]string{}
		for k, v := range xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	var body string // path of the content to copy, if any
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		h.Typeflag, h.Name = tar.TypeDir, rel+"/"
	case unix.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return fmt.Errorf("archiving %s: %w", rel, err)
		}
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := links[key]; ok && st.Nlink > 1 {
			h.Typeflag, h.Linkname = tar.TypeLink, first
			break
		}
		if st.Nlink > 1 {
			links[key] = rel
		}
		h.Typeflag, h.Size, body = tar.TypeReg, st.Size, full
	case unix.S_IFCHR, unix.S_IFBLK:
		h.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	default:
		return nil
	}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("archiving %s: %w", rel, err)
	}
	if body == "" {
		return nil
	}
	f, err := os.Open(body)
	if err != nil {
		return fmt.Errorf("archiving %s: %w", rel, err)
	}
	defer f.Close()
	if n, err := io.Copy(tw, f); err != nil || n != h.Size {
		return fmt.Errorf("archiving %s: size changed or %w", rel, err)
	}
	return nil
}

// readXattrs returns the extended attributes of path (not following a
// symlink); a filesystem without xattr support has none.
func readXattrs(p string) (map[string]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err == unix.ERANGE {
		if n, err = unix.Llistxattr(p, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Llistxattr(p, buf)
		}
	}
	if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing xattrs: %w", err)
	}
	var out map[string]string
	for name := range bytes.SplitSeq(buf[:n], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		k := string(name)
		v, err := getXattr(p, k)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, nil
}

func getXattr(p, name string) (string, error) {
	sz, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return "", fmt.Errorf("reading xattr %s: %w", name, err)
	}
	buf := make([]byte, sz)
	sz, err = unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", fmt.Errorf("reading xattr %s: %w", name, err)
	}
	return string(buf[:sz]), nil
}

// unmountUnder detaches every mount at or below dir (deepest first) and
// then checks that none is left. A crashed debootstrap can leave proc,
// sysfs or a bind of the host's /dev mounted in its target: removing the
// tree before unmounting would delete host files.
func unmountUnder(dir string) error {
	// /proc/self/mountinfo shows resolved paths.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	} else if os.IsNotExist(err) {
		return nil
	} else {
		return fmt.Errorf("resolving %s: %w", dir, err)
	}
	for range 3 {
		mps, err := mountsUnder(dir)
		if err != nil || len(mps) == 0 {
			return err
		}
		for _, mp := range mps { // deepest first
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
	mps, err := mountsUnder(dir)
	if err == nil && len(mps) > 0 {
		err = fmt.Errorf("mounts left under %s: %s", dir, strings.Join(mps, ", "))
	}
	return err
}

func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	var mps []string
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	// Deepest first: longer paths are never parents of shorter ones.
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	return mps, nil
}

// unescapeMountinfo decodes the octal escapes (\040 for a space, ...)
// that /proc/self/mountinfo uses in paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeTree unmounts whatever is mounted below dir and removes it.
func removeTree(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return os.RemoveAll(dir)
}
