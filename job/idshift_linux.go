package job

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// idShift moves what builds of one id range left to another: a data dir's
// id range changes when vagent picks a new one (the default range of
// earlier versions, 100000, or a range host users came to use) or when
// id_range is configured, and the packages the earlier builds left in the
// package cache stay usable by the new ones.
type idShift struct {
	fromUID, fromGID uint32 // container root of the earlier builds
	toUID, toGID     uint32 // container root of this Runner's builds
	size             uint32
}

func (s idShift) uid(id uint32) uint32 {
	if id >= s.fromUID && id-s.fromUID < s.size {
		return s.toUID + (id - s.fromUID)
	}
	return id
}

func (s idShift) gid(id uint32) uint32 {
	if id >= s.fromGID && id-s.fromGID < s.size {
		return s.toGID + (id - s.fromGID)
	}
	return id
}

// maxShiftDepth bounds the directories followRange descends into: a cache
// is flat; a tree deeper than this was not made by pacman.
const maxShiftDepth = 32

// followRange gives the tree open as fd (path, for messages), which builds
// write to as container root uid:gid, to this range when it belongs to
// another one: when the tree is owned by another mapped root, every entry
// below it owned by an id of that root's range gets the same id of the new
// range. The caller then chowns the tree itself. Entries are reached
// through descriptors, without following links. Only root changes owners.
func followRange(fd int, path string, uid, gid int, size uint32) error {
	if os.Geteuid() != 0 || size == 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if !otherRange(fd, uid, gid) {
		return nil
	}
	s := idShift{fromUID: st.Uid, fromGID: st.Gid, toUID: uint32(uid), toGID: uint32(gid), size: size}
	if err := s.dir(fd, 0); err != nil {
		return fmt.Errorf("moving %s from host ids %d to %d: %w", path, st.Uid, uid, err)
	}
	return nil
}

// otherRange tells whether the tree open as fd belongs to builds of
// another id range than uid:gid's: it is owned by another mapped root (not
// host root, the owner of a tree just created).
func otherRange(fd, uid, gid int) bool {
	var st unix.Stat_t
	if os.Geteuid() != 0 || unix.Fstat(fd, &st) != nil {
		return false
	}
	return st.Uid != 0 && (st.Uid != uint32(uid) || st.Gid != uint32(gid))
}

func (s idShift) dir(fd, depth int) error {
	if depth > maxShiftDepth {
		return errors.New("too deep")
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(dup), "")
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // removed meanwhile
		}
		if u, g := s.uid(st.Uid), s.gid(st.Gid); u != st.Uid || g != st.Gid {
			if err := unix.Fchownat(fd, name, int(u), int(g), unix.AT_SYMLINK_NOFOLLOW); err != nil {
				errs = append(errs, err)
			}
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, s.dir(sub, depth+1))
			unix.Close(sub)
		}
	}
	return errors.Join(errs...)
}
