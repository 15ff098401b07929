package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
	maxID          = 1<<32 - 2 // (uid_t)-1 means "unchanged" to chown
)

// extractor applies layer tars to one root directory. Every path is
// resolved by the kernel inside the root (openat2 with RESOLVE_IN_ROOT):
// ".." and symlinks, absolute ones included, cannot leave it. Entries are
// then created relative to their parent's file descriptor, so a symlink as
// the last component is created or replaced, never followed.
type extractor struct {
	rootFD int
	opts   *unpackOptions
	isRoot bool
	buf    []byte
	// What a file this process creates gets without being told: the
	// process's gid (unless the parent directory is setgid) and the
	// mode asked for less the umask (noUmask if it is unknown). The
	// extractor skips the fchown and fchmod that would change nothing.
	egid     int
	umask    uint32
	rootSgid bool  // the root directory is setgid
	spend    spend // the image's account against opts.budget

	// Per layer.
	layer   string
	created map[string]struct{} // entries this layer created or merged
	dirs    []dirMeta           // directory metadata, applied at layer end
	// Hardlinks whose target did not exist yet, linked at the layer's
	// end; pendingIdx maps a link's name to its index in pending.
	pending    []pendingLink
	pendingIdx map[string]int

	// The last parent directory resolved, kept open: tar streams list
	// the entries of a directory together. Invalidated whenever anything
	// is removed.
	cacheDir  string
	cacheFD   int
	cacheSgid bool // cacheDir is setgid
}

// noUmask means the umask is not known: every file gets its fchmod.
const noUmask = 0o777

type dirMeta struct {
	name string
	hdr  *tar.Header
}

type pendingLink struct {
	name, target string // clean names
	hdr          *tar.Header
	dead         bool // a later entry of the layer took the name
}

func newExtractor(dir string, opts *unpackOptions) (*extractor, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	// openat2 needs Linux 5.6; find out now rather than at the first entry.
	probe, err := openInRoot(fd, ".", unix.O_PATH|unix.O_DIRECTORY)
	if err == nil {
		unix.Close(probe)
	} else {
		unix.Close(fd)
		if errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("openat2 (linux 5.6 or later) is needed: %w", errors.ErrUnsupported)
		}
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	// A shifted tree's root is the shifted root's, as the image's own
	// entries will be: an owner of 0 there is the unpacker's, before any
	// layer named "./" (a shifted owner is never 0).
	if shifted := opts.uidShift != 0 || opts.gidShift != 0; shifted && os.Geteuid() == 0 && (st.Uid == 0 || st.Gid == 0) {
		if err := unix.Fchownat(fd, "", int(opts.uidShift), int(opts.gidShift), unix.AT_EMPTY_PATH); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	return &extractor{
		rootFD:   fd,
		opts:     opts,
		isRoot:   os.Geteuid() == 0,
		egid:     os.Getegid(),
		umask:    processUmask(),
		rootSgid: st.Mode&unix.S_ISGID != 0,
		buf:      make([]byte, 1<<20),
		spend:    spend{limit: opts.budget},
		cacheFD:  -1,
	}, nil
}

// processUmask reads the umask from /proc/self/status (reading it with
// umask(2) would change it for a moment, under other goroutines' feet).
// It returns noUmask when it cannot tell.
func processUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return noUmask
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			u, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				return noUmask
			}
			return uint32(u) & 0o777
		}
	}
	return noUmask
}

func (x *extractor) close() {
	x.invalidate()
	if x.rootFD >= 0 {
		unix.Close(x.rootFD)
		x.rootFD = -1
	}
}

// openInRoot opens name relative to dirfd, resolved as if dirfd were the
// root directory.
func openInRoot(dirfd int, name string, flags int) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for range 16 {
		fd, err := unix.Openat2(dirfd, name, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// applyLayer applies one uncompressed layer tar stream and reads it to
// its end, counting it against the image's budget.
func (x *extractor) applyLayer(ctx context.Context, r io.Reader, layer string) (retErr error) {
	x.layer = layer
	x.created = map[string]struct{}{}
	x.dirs = x.dirs[:0]
	x.pending, x.pendingIdx = nil, map[string]int{}
	defer func() {
		x.created = nil
		x.pending, x.pendingIdx = nil, nil
		x.invalidate()
	}()
	r = x.spend.reader(r)
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: reading tar: %w", layer, err)
		}
		if err := x.spend.entry(); err != nil {
			return fmt.Errorf("%s: entry %q: %w", layer, hdr.Name, err)
		}
		if err := x.entry(ctx, hdr, tr); err != nil {
			return fmt.Errorf("%s: entry %q: %w", layer, hdr.Name, diskFull(err))
		}
	}
	if err := x.linkPending(); err != nil {
		return fmt.Errorf("%s: %w", layer, diskFull(err))
	}
	// Directory metadata last: creating the entries inside a directory
	// changes its mtime. Changing metadata does not touch the parent's
	// mtime, so the order among directories does not matter.
	for _, d := range x.dirs {
		if err := x.dirMetadata(d); err != nil {
			return fmt.Errorf("%s: entry %q: %w", layer, d.hdr.Name, diskFull(err))
		}
	}
	// Read to the end: the digest covers the whole blob, and what follows
	// the tar's end counts against the budget like the rest.
	if _, err := io.CopyBuffer(io.Discard, ctxReader{ctx, r}, x.buf); err != nil {
		return fmt.Errorf("%s: reading: %w", layer, err)
	}
	return nil
}

func unsafeEntry(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnsafeEntry}, args...)...)
}

// cleanName validates a tar path and returns it relative to the root
// ("." for the root itself). An absolute name is a path in the image's
// root, as tar, umoci and go-containerregistry read it: "/etc/x" is
// "etc/x", and "/../x" is "x" (the root's ".." is the root). A relative
// name that climbs out with ".." is refused.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", unsafeEntry("empty name")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", unsafeEntry("NUL in name")
	}
	if strings.HasPrefix(name, "/") {
		c := strings.TrimLeft(path.Clean(name), "/")
		if c == "" {
			return ".", nil
		}
		return c, nil
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", unsafeEntry("path leaves the root")
	}
	return c, nil
}

func (x *extractor) entry(ctx context.Context, hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil // consumed by archive/tar
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if err := x.spend.depth(name); err != nil {
		return err
	}
	if i, ok := x.pendingIdx[name]; ok {
		// A later entry of the layer takes the name of a link still
		// waiting for its target: the later one wins, as in tar.
		x.pending[i].dead = true
		delete(x.pendingIdx, name)
	}
	dir, base := path.Split(name)
	dir = path.Clean(dir) // "" becomes "."
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return unsafeEntry("the root can only be a directory")
		}
		x.dirs = append(x.dirs, dirMeta{name: ".", hdr: hdr})
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return x.whiteout(dir, base)
	}
	if _, _, err := x.owner(hdr); err != nil {
		return err
	}
	pfd, err := x.parent(dir)
	if err != nil {
		return err
	}
	x.created[name] = struct{}{}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont: // archive/tar reports TypeRegA as TypeReg
		return x.regular(ctx, pfd, base, name, hdr, r)
	case tar.TypeDir:
		return x.directory(pfd, base, name, hdr)
	case tar.TypeSymlink:
		return x.symlink(pfd, base, name, hdr)
	case tar.TypeLink:
		return x.hardlink(pfd, base, name, hdr)
	case tar.TypeChar, tar.TypeBlock:
		if !x.opts.devices {
			return unsafeEntry("device node not permitted")
		}
		return x.node(pfd, base, name, hdr)
	case tar.TypeFifo:
		return x.node(pfd, base, name, hdr)
	default:
		delete(x.created, name)
		x.opts.log.WithField("entry", hdr.Name).Debugf("skipping tar entry of type %q", hdr.Typeflag)
		return nil
	}
}

// overflowID is the container id an owner the unpacking user namespace
// cannot map becomes (nobody, as the kernel shows an unmapped id).
const overflowID = 65534

// chown sets an owner with set. In a shifted unpack, an owner that the
// user namespace of the agent does not map (rootless mode: container ids
// from 65536 up, beyond the user's subordinate ids) cannot be set
// (EINVAL): the entry goes to nobody instead, as a rootful build would
// show such an owner through its idmapped lower.
func (x *extractor) chown(set func(uid, gid int) error, uid, gid int) error {
	err := set(uid, gid)
	if err != unix.EINVAL || (x.opts.uidShift == 0 && x.opts.gidShift == 0) {
		return err
	}
	nobodyU, nobodyG := overflowID+int(x.opts.uidShift), overflowID+int(x.opts.gidShift)
	if uid-int(x.opts.uidShift) < overflowID && gid-int(x.opts.gidShift) < overflowID {
		return err // an id the namespace should map: not ours to paper over
	}
	if uid-int(x.opts.uidShift) >= overflowID {
		uid = nobodyU
	}
	if gid-int(x.opts.gidShift) >= overflowID {
		gid = nobodyG
	}
	return set(uid, gid)
}

// owner returns the (shifted) owner of an entry.
func (x *extractor) owner(hdr *tar.Header) (uid, gid int, err error) {
	u := int64(hdr.Uid) + int64(x.opts.uidShift)
	g := int64(hdr.Gid) + int64(x.opts.gidShift)
	if hdr.Uid < 0 || hdr.Gid < 0 || u > maxID || g > maxID {
		return 0, 0, fmt.Errorf("owner %d:%d out of range", hdr.Uid, hdr.Gid)
	}
	return int(u), int(g), nil
}

func (x *extractor) invalidate() {
	if x.cacheFD >= 0 {
		unix.Close(x.cacheFD)
	}
	x.cacheFD = -1
	x.cacheDir = ""
}

// removed must be called after name (and everything below it) was removed:
// it drops cached handles and pending metadata that lived there.
func (x *extractor) removed(name string) {
	if x.cacheDir == name || strings.HasPrefix(x.cacheDir, name+"/") || name == "." {
		x.invalidate()
	}
	keep := x.dirs[:0]
	for _, d := range x.dirs {
		if d.name == name || strings.HasPrefix(d.name, name+"/") || (name == "." && d.name != ".") {
			continue
		}
		keep = append(keep, d)
	}
	x.dirs = keep
}

// parent returns a descriptor for directory dir inside the root, creating
// missing directories. The descriptor is borrowed: valid until the next
// call to parent or invalidate.
func (x *extractor) parent(dir string) (int, error) {
	if dir == "." {
		return x.rootFD, nil
	}
	if x.cacheFD >= 0 && x.cacheDir == dir {
		return x.cacheFD, nil
	}
	fd, err := x.mkdirAll(dir)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("opening parent %s: %w", dir, err)
	}
	x.invalidate()
	x.cacheFD, x.cacheDir, x.cacheSgid = fd, dir, st.Mode&unix.S_ISGID != 0
	return fd, nil
}

// parentSetgid tells whether dir, just resolved with parent, is setgid:
// then files made in it take its group.
func (x *extractor) parentSetgid(dir string) bool {
	if dir == "." {
		return x.rootSgid
	}
	return x.cacheDir != dir || x.cacheSgid // not cached: assume it is
}

// mkdirAll opens dir inside the root, creating it and its missing parents
// (mode 0755, owned by the shifted root) like tar does for entries whose
// directories are not in the archive. The caller closes the descriptor.
func (x *extractor) mkdirAll(dir string) (int, error) {
	fd, err := openInRoot(x.rootFD, dir, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil {
		return fd, nil
	}
	if err != unix.ENOENT {
		if err == unix.ENOTDIR {
			return -1, fmt.Errorf("parent %s is not a directory", dir)
		}
		return -1, fmt.Errorf("opening parent %s: %w", dir, err)
	}
	pdir, base := path.Split(dir)
	pdir = path.Clean(pdir)
	var pfd int
	if pdir == "." {
		pfd = x.rootFD
	} else {
		if pfd, err = x.mkdirAll(pdir); err != nil {
			return -1, err
		}
		defer unix.Close(pfd)
	}
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil && err != unix.EEXIST {
		return -1, fmt.Errorf("creating parent %s: %w", dir, err)
	} else if err == nil && x.isRoot && (x.opts.uidShift != 0 || x.opts.gidShift != 0) {
		if err := unix.Fchownat(pfd, base, int(x.opts.uidShift), int(x.opts.gidShift), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return -1, fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	fd, err = openInRoot(pfd, base, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		// For example a dangling symlink in the way.
		return -1, fmt.Errorf("opening parent %s: %w", dir, err)
	}
	return fd, nil
}

// clear removes whatever is at base in pfd so that a new entry can take
// its place. If keepDir is set and base is a directory, it is kept and
// clear reports true.
func (x *extractor) clear(pfd int, base, name string, keepDir bool) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return false, nil
		}
		return false, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if keepDir {
			return true, nil
		}
		if err := removeAllAt(pfd, base); err != nil {
			return false, fmt.Errorf("removing %s: %w", name, err)
		}
	} else if err := unix.Unlinkat(pfd, base, 0); err != nil && err != unix.ENOENT {
		return false, fmt.Errorf("removing %s: %w", name, err)
	}
	x.removed(name)
	return false, nil
}

func (x *extractor) regular(ctx context.Context, pfd int, base, name string, hdr *tar.Header, r io.Reader) error {
	// The declared size (a sparse file's logical size) is reserved before
	// anything is written.
	if err := x.spend.file(hdr.Size); err != nil {
		return err
	}
	// The file is made with its permission bits (the tree is not
	// reachable by other users while it is unpacked: see Store), so that
	// most files need no fchmod; owner, setuid/setgid bits and what the
	// umask took are set in fileMetadata.
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	perm := uint32(hdr.Mode) & 0o777
	fd, err := unix.Openat(pfd, base, flags, perm)
	if err == unix.EEXIST {
		// clear removes below pfd only, so pfd stays valid.
		if _, err := x.clear(pfd, base, name, false); err != nil {
			return err
		}
		fd, err = unix.Openat(pfd, base, flags, perm)
	}
	if err != nil {
		return fmt.Errorf("creating file: %w", err)
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	if err := x.copyData(ctx, fd, r); err != nil {
		return err
	}
	created := newFile{mode: perm &^ x.umask, ownedByUs: true, setgidParent: x.parentSetgid(path.Clean(path.Dir(name)))}
	if err := x.fileMetadata(fd, hdr, created); err != nil {
		return err
	}
	err = unix.Close(fd)
	fd = -1
	return err
}

// holeBlock is the unit of hole detection: a block of this many zero
// bytes, aligned in the file, is skipped rather than written.
const holeBlock = 4096

var zeroBlock [holeBlock]byte

// copyData copies an entry's content into fd, checking ctx before each
// buffer (1 MiB) so that a cancelled unpack stops inside a huge entry.
// Blocks of zeros are not written but left as holes, and the file is then
// extended to its size: archive/tar reads a sparse entry's holes as zeros,
// and this keeps them holes on disk (for any file, so a compressed run of
// zeros costs no disk either).
func (x *extractor) copyData(ctx context.Context, fd int, r io.Reader) error {
	var off, end int64 // bytes read; end of the last byte written
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := io.ReadFull(r, x.buf)
		written, err := writeSparse(fd, x.buf[:n], off)
		if err != nil {
			return fmt.Errorf("writing file: %w", err)
		}
		off += int64(n)
		if written {
			end = off
		}
		switch rerr {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			// archive/tar reports a short entry itself, as a
			// non-EOF error.
			if end < off {
				if err := unix.Ftruncate(fd, off); err != nil {
					return fmt.Errorf("writing file: %w", err)
				}
			}
			return nil
		default:
			return fmt.Errorf("reading tar: %w", rerr)
		}
	}
}

// writeSparse writes b at offset off of fd, skipping the blocks of zeros.
// It reports whether b's last block was written.
func writeSparse(fd int, b []byte, off int64) (lastWritten bool, err error) {
	start := 0 // b[start:i] is the run of data to write
	for i := 0; i < len(b); {
		// Blocks are aligned in the file: off is a multiple of the
		// buffer's size, except at an entry's end.
		j := min(i+holeBlock-int((off+int64(i))%holeBlock), len(b))
		if !bytes.Equal(b[i:j], zeroBlock[:j-i]) {
			i = j
			continue
		}
		if err := pwriteAll(fd, b[start:i], off+int64(start)); err != nil {
			return false, err
		}
		i = j
		start = j
	}
	if start == len(b) {
		return false, nil
	}
	return true, pwriteAll(fd, b[start:], off+int64(start))
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// newFile is what a file just created by this process has without
// being told; the zero value (unknown) means owner and mode are set.
type newFile struct {
	ownedByUs    bool   // created by this process, this moment
	mode         uint32 // its mode (0 and not ownedByUs: unknown)
	setgidParent bool   // its parent is setgid: its group is the parent's
}

// fileMetadata sets owner, mode, xattrs and times through an open
// descriptor, in that order: chown clears setuid/setgid bits and file
// capabilities. An owner or mode the file has from its creation is not
// set again.
func (x *extractor) fileMetadata(fd int, hdr *tar.Header, created newFile) error {
	uid, gid, err := x.owner(hdr)
	if err != nil {
		return err
	}
	sameOwner := created.ownedByUs && !created.setgidParent && uid == 0 && gid == x.egid
	if x.isRoot && !sameOwner {
		if err := x.chown(func(u, g int) error { return unix.Fchown(fd, u, g) }, uid, gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if mode := uint32(hdr.Mode) & 0o7777; !created.ownedByUs || mode != created.mode || x.umask == noUmask {
		if err := unix.Fchmod(fd, mode); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if err := x.xattrs(fd, hdr); err != nil {
		return err
	}
	return futimens(fd, hdr)
}

// xattrs sets the extended attributes recorded in PAX records, where the
// file system allows.
func (x *extractor) xattrs(fd int, hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		// overlayfs reads its own attributes from lower directories:
		// an image must not be able to steer the sandbox's overlay.
		if strings.HasPrefix(attr, "trusted.overlay.") || strings.HasPrefix(attr, "user.overlay.") {
			continue
		}
		if attr == "security.capability" && x.opts.uidShift != 0 {
			// A file capability counts in the user namespaces whose root
			// it names: the shifted tree's container root, not the
			// unpacking process's (rootless: the user).
			v = capWithRoot(v, x.opts.uidShift)
		}
		err := unix.Fsetxattr(fd, attr, []byte(v), 0)
		switch err {
		case nil:
		case unix.ENOTSUP, unix.EPERM, unix.EACCES, unix.E2BIG, unix.ERANGE, unix.EINVAL:
			x.opts.log.WithFields(map[string]any{"entry": hdr.Name, "xattr": attr}).Debugf("xattr not set: %v", err)
		default:
			return fmt.Errorf("setting xattr %s: %w", attr, err)
		}
	}
	return nil
}

func timespecs(hdr *tar.Header) [2]unix.Timespec {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	return [2]unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
}

// futimens sets the times of an open file (utimensat with a NULL path).
func futimens(fd int, hdr *tar.Header) error {
	ts := timespecs(hdr)
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("setting times: %w", errno)
	}
	return nil
}

func (x *extractor) directory(pfd int, base, name string, hdr *tar.Header) error {
	err := unix.Mkdirat(pfd, base, 0o700)
	if err == unix.EEXIST {
		var isDir bool
		if isDir, err = x.clear(pfd, base, name, true); err != nil {
			return err
		}
		if !isDir {
			err = unix.Mkdirat(pfd, base, 0o700)
		}
	}
	if err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	x.dirs = append(x.dirs, dirMeta{name: name, hdr: hdr})
	return nil
}

func (x *extractor) dirMetadata(d dirMeta) error {
	fd, err := openInRoot(x.rootFD, d.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("opening directory: %w", err)
	}
	defer unix.Close(fd)
	return x.fileMetadata(fd, d.hdr, newFile{})
}

func (x *extractor) symlink(pfd int, base, name string, hdr *tar.Header) error {
	// The target is data: it is stored as it is and never followed here.
	err := unix.Symlinkat(hdr.Linkname, pfd, base)
	if err == unix.EEXIST {
		if _, err = x.clear(pfd, base, name, false); err != nil {
			return err
		}
		err = unix.Symlinkat(hdr.Linkname, pfd, base)
	}
	if err != nil {
		return fmt.Errorf("creating symlink: %w", err)
	}
	return x.linkMetadata(pfd, base, hdr, false)
}

// linkMetadata sets owner, mode (unless a symlink) and times of base in pfd
// without following a symlink.
func (x *extractor) linkMetadata(pfd int, base string, hdr *tar.Header, chmod bool) error {
	uid, gid, err := x.owner(hdr)
	if err != nil {
		return err
	}
	if x.isRoot {
		if err := x.chown(func(u, g int) error { return unix.Fchownat(pfd, base, u, g, unix.AT_SYMLINK_NOFOLLOW) }, uid, gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if chmod {
		// base was just created by mknodat and is not a symlink.
		if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode)&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	ts := timespecs(hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times: %w", err)
	}
	return nil
}

// hardlink links name to its target, resolved inside the root. A target
// that does not exist (yet) defers the link to the end of the layer: tar
// streams may list a link before its target.
func (x *extractor) hardlink(pfd int, base, name string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
	}
	if err := x.spend.depth(target); err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	if target == "." {
		return unsafeEntry("hardlink to the root")
	}
	if target == name {
		return nil
	}
	err = x.link(pfd, base, name, target)
	if errors.Is(err, unix.ENOENT) {
		x.pendingIdx[name] = len(x.pending)
		x.pending = append(x.pending, pendingLink{name: name, target: target, hdr: hdr})
		return nil
	}
	if err != nil {
		return fmt.Errorf("hardlink to %q: %w", hdr.Linkname, err)
	}
	return nil
}

// link makes base in pfd (named name) a hardlink of target, replacing what
// is there.
func (x *extractor) link(pfd int, base, name, target string) error {
	tdir, tbase := path.Split(target)
	tfd, err := openInRoot(x.rootFD, path.Clean(tdir), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	err = unix.Linkat(tfd, tbase, pfd, base, 0)
	if err == unix.EEXIST {
		if _, err = x.clear(pfd, base, name, false); err != nil {
			return err
		}
		err = unix.Linkat(tfd, tbase, pfd, base, 0)
	}
	return err
}

// linkPending makes the hardlinks deferred in this layer, a link whose
// target is itself a deferred link after that one. A target that still
// does not exist fails the unpack.
func (x *extractor) linkPending() error {
	done := make([]bool, len(x.pending))
	var chain []int
	for i := range x.pending {
		chain = chain[:0]
		for j := i; !done[j] && !x.pending[j].dead; {
			done[j] = true // also ends a cycle
			chain = append(chain, j)
			k, ok := x.pendingIdx[x.pending[j].target]
			if !ok {
				break
			}
			j = k
		}
		for c := len(chain) - 1; c >= 0; c-- {
			if err := x.linkDeferred(x.pending[chain[c]]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (x *extractor) linkDeferred(p pendingLink) error {
	dir, base := path.Split(p.name)
	pfd, err := openInRoot(x.rootFD, path.Clean(dir), unix.O_PATH|unix.O_DIRECTORY)
	if err == nil {
		err = x.link(pfd, base, p.name, p.target)
		unix.Close(pfd)
	}
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("entry %q: hardlink target %q is neither in the layer nor below: %w", p.hdr.Name, p.hdr.Linkname, err)
	}
	if err != nil {
		return fmt.Errorf("entry %q: hardlink to %q: %w", p.hdr.Name, p.hdr.Linkname, err)
	}
	return nil
}

func (x *extractor) node(pfd int, base, name string, hdr *tar.Header) error {
	mode := uint32(hdr.Mode) & 0o7777
	var dev int
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode |= unix.S_IFCHR
		dev = int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
		dev = int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	default:
		mode |= unix.S_IFIFO
	}
	err := unix.Mknodat(pfd, base, mode, dev)
	if err == unix.EEXIST {
		if _, err = x.clear(pfd, base, name, false); err != nil {
			return err
		}
		err = unix.Mknodat(pfd, base, mode, dev)
	}
	if err != nil {
		return fmt.Errorf("creating node: %w", err)
	}
	return x.linkMetadata(pfd, base, hdr, true)
}

// whiteout handles ".wh.NAME" (remove NAME of lower layers) and the opaque
// marker ".wh..wh..opq" (hide the lower layers' contents of dir), whatever
// their position in the stream: entries of this layer are kept.
func (x *extractor) whiteout(dir, base string) error {
	if base == opaqueMarker {
		pfd, err := x.parent(dir)
		if err != nil {
			return err
		}
		if dir != "." {
			x.created[dir] = struct{}{}
		}
		fd, err := openInRoot(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return x.clearLower(fd, dir)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil // other aufs metadata: not part of the image
	}
	target := base[len(whiteoutPrefix):]
	if target == "" || target == "." || target == ".." {
		return unsafeEntry("whiteout of %q", target)
	}
	name := path.Join(dir, target)
	if _, ok := x.created[name]; ok {
		return nil // whiteouts apply to lower layers only
	}
	pfd, err := openInRoot(x.rootFD, dir, unix.O_PATH|unix.O_DIRECTORY)
	if err == unix.ENOENT || err == unix.ENOTDIR {
		return nil // nothing to remove
	}
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := removeAllAt(pfd, target); err != nil {
		return fmt.Errorf("whiteout: %w", err)
	}
	x.removed(name)
	return nil
}

// clearLower removes the entries of directory fd (named dir) that this
// layer did not create, and recurses into directories it did create.
func (x *extractor) clearLower(fd int, dir string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		name := path.Join(dir, n)
		if _, ok := x.created[name]; !ok {
			if err := removeAllAt(fd, n); err != nil {
				return fmt.Errorf("opaque directory: %w", err)
			}
			x.removed(name)
			continue
		}
		sub, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR || err == unix.ELOOP {
			continue
		}
		if err != nil {
			return err
		}
		err = x.clearLower(sub, name)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

func readDirNames(fd int) ([]string, error) {
	dfd, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dfd), "dir")
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f.Readdirnames(-1)
}

// removeAllAt removes name in dirfd and, for a directory, all it contains,
// never following a symlink.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.ENOTEMPTY && err != unix.EEXIST {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

// The layout of security.capability (linux/capability.h).
const (
	vfsCapRevisionMask = 0xFF000000
	vfsCapRevision2    = 0x02000000
	vfsCapRevision3    = 0x03000000
	vfsCapFlagsMask    = 0x000000FF
)

// capWithRoot returns a file capability (v2, or v3 with a root uid in the
// image's ids) as a v3 one whose root uid is the image's root shifted by
// shift: the root of the user namespaces the capability works in. Values
// of another size are returned as they are (the kernel refuses them).
func capWithRoot(v string, shift uint32) string {
	b := []byte(v)
	if len(b) != 20 && len(b) != 24 {
		return v
	}
	magic := binary.LittleEndian.Uint32(b)
	var root uint32
	switch {
	case magic&vfsCapRevisionMask == vfsCapRevision2 && len(b) == 20:
	case magic&vfsCapRevisionMask == vfsCapRevision3 && len(b) == 24:
		root = binary.LittleEndian.Uint32(b[20:])
	default:
		return v
	}
	out := make([]byte, 24)
	copy(out, b[:20])
	binary.LittleEndian.PutUint32(out, vfsCapRevision3|magic&vfsCapFlagsMask)
	binary.LittleEndian.PutUint32(out[20:], root+shift)
	return string(out)
}
