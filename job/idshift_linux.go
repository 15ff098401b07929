package job

import (
	"os"

	"golang.org/x/sys/unix"
)

// inOtherRange tells whether the tree open as fd was written by builds of
// another id range than this Runner's (container root uid:gid, size ids):
// its owner is neither host root (a tree just created) nor an id of this
// range (container root, or the builder user a build gave it to). The data
// dir's id range changes when vagent picks a new one (a data dir of the
// earlier default 100000, or a range host users came to use) or when
// id_range is configured; a cache of the old range's builds is then
// emptied (buildTree): its files belong to ids no build of this range has.
func inOtherRange(fd, uid, gid int, size uint32) bool {
	var st unix.Stat_t
	if os.Geteuid() != 0 || size == 0 || unix.Fstat(fd, &st) != nil || st.Uid == 0 {
		return false
	}
	in := func(id uint32, base int) bool { return id >= uint32(base) && id-uint32(base) < size }
	return !in(st.Uid, uid) || !in(st.Gid, gid)
}
