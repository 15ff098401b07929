package builder

import (
	"archive/tar"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/oci"
)

// mountPoints are the paths the sandbox mounts over. When the base image
// lacks them, the run creates them in its upper as empty mount points:
// they are not something the setup changed.
var mountPoints = []string{"dev", "proc", "sys", "tmp", "etc/resolv.conf", "etc/hosts"}

// upperTar writes the overlay upper directory upper as a layer tar to w:
// whiteouts (0/0 character devices) become ".wh.NAME", opaque directories
// get a ".wh..wh..opq" entry, owners are shifted back by uidBase/gidBase
// (container ids = host ids - base, within [0, idSize)), hardlinks inside
// the upper are kept as such. Mount points the sandbox made that lower (the
// base rootfs) does not have are left out, as are sockets.
//
// The upper is what a base image's code wrote: the layer is held to the
// image budget (entries, path depth, and the declared sizes of its files —
// a sparse file counts its size, holes included, as it would be written
// out), checked before a file is read, and the walk and every copy stop
// within a read of at most 1 MiB once ctx ends.
func upperTar(ctx context.Context, w io.Writer, upper, lower string, uidBase, gidBase, idSize uint32, userXattr bool, budget oci.Budget) error {
	skip := map[string]bool{}
	for _, p := range mountPoints {
		if _, err := os.Lstat(filepath.Join(lower, p)); err != nil {
			skip[p] = true
		}
	}
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	buf := make([]byte, 1<<20)
	var entries, declared int64
	shift := func(rel string, uid, gid uint32) (int, int, error) {
		if uid < uidBase || gid < gidBase || uid-uidBase >= idSize || gid-gidBase >= idSize {
			return 0, 0, fmt.Errorf("%s: owner %d:%d outside the sandbox's id range", rel, uid, gid)
		}
		return int(uid - uidBase), int(gid - gidBase), nil
	}
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(upper, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if entries++; entries > budget.Entries {
			return fmt.Errorf("%w: the builder layer has more than %d entries", oci.ErrBudgetExceeded, budget.Entries)
		}
		if d := strings.Count(rel, "/") + 1; d > budget.Depth {
			return fmt.Errorf("%w: %s is %d components deep, budget %d", oci.ErrBudgetExceeded, rel, d, budget.Depth)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if skip[rel] {
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				return fs.SkipDir
			}
			return nil
		}
		mtime := time.Unix(st.Mtim.Unix())
		dir, base := path.Split(rel)
		typ := st.Mode & unix.S_IFMT
		if typ == unix.S_IFCHR && st.Rdev == 0 {
			// A whiteout: the setup deleted this path of the base.
			return tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeReg, Name: dir + ".wh." + base, Mode: 0o600,
				ModTime: mtime, Format: tar.FormatPAX,
			})
		}
		uid, gid, err := shift(rel, st.Uid, st.Gid)
		if err != nil {
			return err
		}
		hdr := &tar.Header{
			Name: rel, Mode: int64(st.Mode & 0o7777), Uid: uid, Gid: gid,
			ModTime: mtime, Format: tar.FormatPAX,
		}
		xattrs, opaque, err := readXattrs(p, userXattr)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if len(xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range xattrs {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		var content *os.File
		switch typ {
		case unix.S_IFDIR:
			hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		case unix.S_IFREG:
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok && st.Nlink > 1 {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
				break
			}
			if st.Nlink > 1 {
				links[key] = rel
			}
			if st.Size > budget.Bytes-declared {
				return fmt.Errorf("%w: the builder layer's files are more than %d bytes (%s declares %d)", oci.ErrBudgetExceeded, budget.Bytes, rel, st.Size)
			}
			declared += st.Size
			hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
			if content, err = os.Open(p); err != nil {
				return err
			}
			defer content.Close()
		case unix.S_IFLNK:
			hdr.Typeflag = tar.TypeSymlink
			if hdr.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		case unix.S_IFSOCK:
			return nil // cannot be archived, as with docker commit
		default:
			// Device nodes cannot be made in the sandbox's user
			// namespace; anything else is not image content.
			return fmt.Errorf("%s: unexpected file type %#o in the upper directory", rel, typ)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if content != nil {
			n, err := io.CopyBuffer(tw, ctxReader{ctx, io.LimitReader(content, st.Size)}, buf)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			if n != st.Size {
				return fmt.Errorf("%s: changed while being archived", rel)
			}
		}
		if opaque {
			return tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeReg, Name: rel + "/.wh..wh..opq", Mode: 0o600,
				ModTime: mtime, Format: tar.FormatPAX,
			})
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// ctxReader stops reading once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readXattrs returns the extended attributes of p worth keeping in an
// image, and whether p is an opaque overlay directory: marked with
// trusted.overlay.opaque, or with userXattr (a rootless agent's overlay)
// user.overlay.opaque. Overlay's own attributes are dropped; a namespaced
// file capability (v3, written by container root) becomes a plain v2 one,
// as images carry them.
func readXattrs(p string, userXattr bool) (map[string]string, bool, error) {
	opaqueName := "trusted.overlay.opaque"
	if userXattr {
		opaqueName = "user.overlay.opaque"
	}
	names, err := listXattrs(p)
	if err != nil {
		return nil, false, err
	}
	var out map[string]string
	opaque := false
	for _, name := range names {
		v, err := getXattr(p, name)
		if err != nil {
			return nil, false, err
		}
		switch {
		case name == opaqueName:
			opaque = v == "y"
			continue
		case strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay."):
			continue
		case name == "security.capability":
			v = capV2(v)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = v
	}
	return out, opaque, nil
}

const (
	vfsCapRevisionMask = 0xFF000000
	vfsCapRevision2    = 0x02000000
	vfsCapRevision3    = 0x03000000
	vfsCapFlagsMask    = 0x000000FF
)

// capV2 turns a v3 security.capability value (v2 plus a root uid) into v2.
func capV2(v string) string {
	b := []byte(v)
	if len(b) != 24 {
		return v
	}
	magic := binary.LittleEndian.Uint32(b)
	if magic&vfsCapRevisionMask != vfsCapRevision3 {
		return v
	}
	binary.LittleEndian.PutUint32(b, vfsCapRevision2|magic&vfsCapFlagsMask)
	return string(b[:20])
}

func listXattrs(p string) ([]string, error) {
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err == unix.ENOTSUP {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing xattrs: %w", err)
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

func getXattr(p, name string) (string, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading xattr %s: %w", name, err)
		}
		return string(buf[:n]), nil
	}
}
