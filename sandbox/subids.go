package sandbox

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// SubIDs are the subordinate id blocks of one user, in file order, as
// newuidmap and newgidmap accept them: the lines of /etc/subuid (or
// /etc/subgid) that name the user or its numeric id.
type SubIDs []IDRange

// Total is the number of ids of all blocks.
func (s SubIDs) Total() uint64 {
	var n uint64
	for _, r := range s {
		n += uint64(r.Size)
	}
	return n
}

func (s SubIDs) String() string {
	if len(s) == 0 {
		return "none"
	}
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}

// subIDEntry is one line of /etc/subuid or /etc/subgid.
type subIDEntry struct {
	owner string // a user name or a numeric id
	r     IDRange
}

// readSubIDFile returns the entries of file (missing: none). Lines that
// do not parse are skipped, as shadow's tools skip them.
func readSubIDFile(file string) ([]subIDEntry, error) {
	fh, err := os.Open(file)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []subIDEntry
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		n, err2 := strconv.ParseUint(f[2], 10, 32)
		r := IDRange{Base: uint32(start), Size: uint32(n)}
		if err1 != nil || err2 != nil || !r.Valid() {
			continue
		}
		out = append(out, subIDEntry{owner: f[0], r: r})
	}
	return out, sc.Err()
}

// ReadSubIDs returns the blocks file (an /etc/subuid or /etc/subgid)
// gives the user name with id id.
func ReadSubIDs(file, name string, id uint32) (SubIDs, error) {
	entries, err := readSubIDFile(file)
	if err != nil {
		return nil, err
	}
	idStr := strconv.FormatUint(uint64(id), 10)
	var out SubIDs
	for _, e := range entries {
		if e.owner == name || e.owner == idStr {
			out = append(out, e.r)
		}
	}
	return out, nil
}

// freeSubIDs suggests a block of size ids for a new /etc/subuid and
// /etc/subgid entry: the first one from 100000 on (useradd's SUB_UID_MIN),
// aligned to 65536, that overlaps no entry of files.
func freeSubIDs(size uint32, files ...string) IDRange {
	const align = 65536
	var used []IDRange
	for _, file := range files {
		entries, _ := readSubIDFile(file)
		for _, e := range entries {
			used = append(used, e.r)
		}
	}
	for base := uint64(100000); base+uint64(size) < 1<<32-1; base = (base/align + 1) * align {
		free := true
		for _, u := range used {
			if uint64(u.Base) <= base+uint64(size)-1 && u.Last() >= base {
				free = false
				break
			}
		}
		if free {
			return IDRange{Base: uint32(base), Size: size}
		}
	}
	return IDRange{}
}
