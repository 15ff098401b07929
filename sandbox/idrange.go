package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// IDRange is a block of host ids: container ids 0..Size-1 map to host ids
// Base..Base+Size-1 (WithIDMap), or a subordinate id block of /etc/subuid
// (SubIDs).
type IDRange struct {
	Base uint32 `json:"base"`
	Size uint32 `json:"size"`
}

// Last returns the range's last host id.
func (r IDRange) Last() uint64 { return uint64(r.Base) + uint64(r.Size) - 1 }

func (r IDRange) String() string { return fmt.Sprintf("%d-%d", r.Base, r.Last()) }

// Valid tells whether r can be mapped: it excludes host root and ends
// below 2^32-1 (the invalid id).
func (r IDRange) Valid() bool {
	return r.Base > 0 && r.Size > 0 && uint64(r.Base)+uint64(r.Size) <= 1<<32-1
}

// The range systemd sets aside for containers' user namespaces
// (systemd-nspawn --private-users=pick picks from it, in blocks of 65536;
// see systemd's UIDS-GIDS.md): no user database entry lives there.
const (
	containerIDsFirst = 0x00080000 // 524288
	containerIDsLast  = 0x6FFFFFFF // 1879048191
)

// defaultSubIDMax is shadow's default SUB_UID_MAX and SUB_GID_MAX: useradd
// hands out /etc/subuid and /etc/subgid blocks up to it.
const defaultSubIDMax = 600100000

// HostIDs names the files that say which host ids are in use: users and
// groups, and the subordinate id blocks of /etc/subuid and /etc/subgid,
// and login.defs, whose SUB_UID_MAX and SUB_GID_MAX bound the blocks
// useradd will hand out in the future. A missing file uses no id.
type HostIDs struct {
	Passwd, Group, Subuid, Subgid, LoginDefs string
}

// SystemHostIDs are the host's own files.
var SystemHostIDs = HostIDs{
	Passwd: "/etc/passwd", Group: "/etc/group",
	Subuid: "/etc/subuid", Subgid: "/etc/subgid",
	LoginDefs: "/etc/login.defs",
}

// Conflicts lists the host users, groups and subordinate id entries (other
// than root's) whose ids fall in r: files of such a user would be
// container files, and a build's files theirs.
func (h HostIDs) Conflicts(r IDRange) []string {
	var out []string
	in := func(id uint64) bool { return id >= uint64(r.Base) && id <= r.Last() }
	for _, file := range []string{h.Passwd, h.Group} {
		forLines(file, func(f []string) {
			if len(f) > 2 {
				if id, err := strconv.ParseUint(f[2], 10, 32); err == nil && in(id) {
					out = append(out, fmt.Sprintf("%s %s (%d)", filepath.Base(file), f[0], id))
				}
			}
		})
	}
	for _, file := range []string{h.Subuid, h.Subgid} {
		forLines(file, func(f []string) {
			if len(f) < 3 || f[0] == "root" || f[0] == "0" {
				return // the agent's own allocation is no conflict
			}
			start, err1 := strconv.ParseUint(f[1], 10, 32)
			n, err2 := strconv.ParseUint(f[2], 10, 32)
			if err1 == nil && err2 == nil && n > 0 && start <= r.Last() && start+n > uint64(r.Base) {
				out = append(out, fmt.Sprintf("%s %s:%d:%d", filepath.Base(file), f[0], start, n))
			}
		})
	}
	return out
}

// interval is a closed range of ids in use.
type interval struct{ first, last uint64 }

// used returns every id in use, as sorted disjoint intervals (overlapping
// ones joined, so that a search by last id works): users and groups, and
// every subordinate block, root's included (another container engine may
// use those).
func (h HostIDs) used() []interval {
	var iv []interval
	for _, file := range []string{h.Passwd, h.Group} {
		forLines(file, func(f []string) {
			if len(f) > 2 {
				if id, err := strconv.ParseUint(f[2], 10, 32); err == nil {
					iv = append(iv, interval{id, id})
				}
			}
		})
	}
	for _, file := range []string{h.Subuid, h.Subgid} {
		forLines(file, func(f []string) {
			if len(f) < 3 {
				return
			}
			start, err1 := strconv.ParseUint(f[1], 10, 32)
			n, err2 := strconv.ParseUint(f[2], 10, 32)
			if err1 == nil && err2 == nil && n > 0 {
				iv = append(iv, interval{start, start + n - 1})
			}
		})
	}
	sort.Slice(iv, func(i, j int) bool { return iv[i].first < iv[j].first })
	var joined []interval
	for _, v := range iv {
		if n := len(joined); n > 0 && v.first <= joined[n-1].last {
			joined[n-1].last = max(joined[n-1].last, v.last)
			continue
		}
		joined = append(joined, v)
	}
	return joined
}

// subIDMax is the highest id useradd may hand out as a subordinate id: the
// larger of login.defs' SUB_UID_MAX and SUB_GID_MAX (shadow's default when
// unset).
func (h HostIDs) subIDMax() uint64 {
	vals := map[string]uint64{"SUB_UID_MAX": defaultSubIDMax, "SUB_GID_MAX": defaultSubIDMax}
	if fh, err := os.Open(h.LoginDefs); err == nil {
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 {
				if _, ok := vals[f[0]]; ok {
					if v, err := strconv.ParseUint(f[1], 10, 32); err == nil {
						vals[f[0]] = v
					}
				}
			}
		}
		fh.Close()
	}
	return max(vals["SUB_UID_MAX"], vals["SUB_GID_MAX"])
}

// ErrNoFreeIDRange means every block of the containers' id range is in use.
var ErrNoFreeIDRange = errors.New("no free block of host ids in 524288-1879048191")

// Pick returns a free block of size host ids (a multiple of 65536 is
// best) from the range systemd sets aside for containers, 524288 to
// 1879048191, as systemd-nspawn --private-users=pick does: aligned to
// 65536, used by no user or group and overlapping no /etc/subuid or
// /etc/subgid entry. Blocks above SUB_UID_MAX and SUB_GID_MAX come first,
// so that useradd does not later give a new user's subordinate ids from
// it. seed (a data directory's path) chooses where the search starts, so
// that agents with different data directories tend to get different
// blocks, and one seed the same block on the same host.
func (h HostIDs) Pick(seed string, size uint32) (IDRange, error) {
	if size == 0 {
		return IDRange{}, errors.New("id range of size 0")
	}
	const align = 65536
	used := h.used()
	// A binary search: a host may have tens of thousands of users.
	free := func(first, last uint64) bool {
		i := sort.Search(len(used), func(i int) bool { return used[i].last >= first })
		return i == len(used) || used[i].first > last
	}
	hf := fnv.New64a()
	hf.Write([]byte(seed))
	start := hf.Sum64()
	lowest := (h.subIDMax() + align) / align * align // the first aligned block above
	for _, lo := range []uint64{max(lowest, containerIDsFirst), containerIDsFirst} {
		if lo+uint64(size)-1 > containerIDsLast {
			continue
		}
		n := (containerIDsLast-uint64(size)+1-lo)/align + 1 // blocks that fit
		for i := range n {
			base := lo + (start+i)%n*align
			if free(base, base+uint64(size)-1) {
				return IDRange{Base: uint32(base), Size: size}, nil
			}
		}
	}
	return IDRange{}, ErrNoFreeIDRange
}

func forLines(file string, fn func([]string)) {
	fh, err := os.Open(file)
	if err != nil {
		return
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			fn(strings.Split(line, ":"))
		}
	}
}

// IDConflicts lists the host users, groups and /etc/subuid or /etc/subgid
// entries (other than root's) whose ids fall in [base, base+size): see
// HostIDs.Conflicts.
func IDConflicts(base, size uint32) []string {
	return SystemHostIDs.Conflicts(IDRange{Base: base, Size: size})
}
