package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeHostIDs writes passwd, group, subuid, subgid and login.defs files.
func fakeHostIDs(t *testing.T, passwd, group, subuid, subgid, loginDefs string) HostIDs {
	t.Helper()
	dir := t.TempDir()
	h := HostIDs{}
	for _, f := range []struct {
		p       *string
		name, s string
	}{{&h.Passwd, "passwd", passwd}, {&h.Group, "group", group}, {&h.Subuid, "subuid", subuid}, {&h.Subgid, "subgid", subgid}, {&h.LoginDefs, "login.defs", loginDefs}} {
		*f.p = filepath.Join(dir, f.name)
		if f.s == "-" {
			continue // missing
		}
		if err := os.WriteFile(*f.p, []byte(f.s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

const (
	debianPasswd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nadmin:x:1000:1000::/home/admin:/bin/bash\n"
	debianGroup  = "root:x:0:\nnogroup:x:65534:\nadmin:x:1000:\n"
	// useradd's first block, as cloud images' default users have it.
	debianSub = "admin:100000:65536\n"
)

func TestPickIDRange(t *testing.T) {
	for _, tc := range []struct {
		name                                string
		passwd, group, subuid, subgid, defs string
		check                               func(t *testing.T, h HostIDs, r IDRange)
	}{
		{"a Debian VM's first user holds 100000:65536", debianPasswd, debianGroup, debianSub, debianSub, "SUB_UID_MAX 600100000\nSUB_GID_MAX 600100000\n", nil},
		{"no subordinate id files", debianPasswd, debianGroup, "-", "-", "-", nil},
		{"blocks above SUB_UID_MAX first", debianPasswd, debianGroup, debianSub, debianSub, "SUB_UID_MAX 900000000\nSUB_GID_MAX 700000000\n",
			func(t *testing.T, _ HostIDs, r IDRange) {
				if r.Base <= 900000000 {
					t.Errorf("picked %v, want above SUB_UID_MAX 900000000", r)
				}
			}},
		{"users and subordinate blocks everywhere above SUB_*_MAX", debianPasswd + crowdUsers(), debianGroup, debianSub + crowdBlocks(), "-", "SUB_UID_MAX 600100000\n",
			func(t *testing.T, _ HostIDs, r IDRange) {
				if r.Base >= 600100000 {
					t.Errorf("picked %v, every block above 600100000 is in use", r)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := fakeHostIDs(t, tc.passwd, tc.group, tc.subuid, tc.subgid, tc.defs)
			r, err := h.Pick("/var/lib/vagent", 65536)
			if err != nil {
				t.Fatal(err)
			}
			if r.Size != 65536 || r.Base%65536 != 0 || r.Base < containerIDsFirst || r.Last() > containerIDsLast || !r.Valid() {
				t.Errorf("picked %v: not an aligned block of systemd's container range", r)
			}
			if c := h.Conflicts(r); len(c) > 0 {
				t.Errorf("picked %v, which is in use: %v", r, c)
			}
			if again, _ := h.Pick("/var/lib/vagent", 65536); again != r {
				t.Errorf("picked %v, then %v for the same data dir", r, again)
			}
			if tc.check != nil {
				tc.check(t, h, r)
			}
		})
	}
}

// crowdUsers puts a user in every 65536-block from 600100000 on (in
// steps, so the file stays small, every aligned block gets one).
func crowdUsers() string {
	var b strings.Builder
	for id := uint64(600100000) / 65536 * 65536; id+65535 <= containerIDsLast; id += 65536 {
		b.WriteString("u:x:" + strconv.FormatUint(id+7, 10) + ":0::/:/bin/false\n")
	}
	return b.String()
}

// crowdBlocks is a subordinate block right above SUB_UID_MAX.
func crowdBlocks() string { return "big:600100001:65536\n" }

func TestPickDiffersBySeed(t *testing.T) {
	h := fakeHostIDs(t, debianPasswd, debianGroup, debianSub, debianSub, "-")
	seen := map[IDRange]bool{}
	for _, d := range []string{"/var/lib/vagent", "/srv/vagent", "/var/lib/vagent-2", "/data/a", "/data/b"} {
		r, err := h.Pick(d, 65536)
		if err != nil {
			t.Fatal(err)
		}
		seen[r] = true
	}
	if len(seen) < 4 {
		t.Errorf("five data dirs got %d distinct ranges: %v", len(seen), seen)
	}
}

func TestPickFull(t *testing.T) {
	h := fakeHostIDs(t, debianPasswd, debianGroup, "all:524288:1878523904\n", "-", "-")
	if r, err := h.Pick("x", 65536); !errors.Is(err, ErrNoFreeIDRange) {
		t.Errorf("Pick on a host whose container range is taken: %v %v", r, err)
	}
	if _, err := h.Pick("x", 0); err == nil {
		t.Error("Pick of size 0 succeeded")
	}
}

func TestIDConflicts(t *testing.T) {
	h := fakeHostIDs(t, debianPasswd+"svc:x:100500:100500::/:/bin/false\n", debianGroup, debianSub+"root:200000:65536\n", "other:165000:1000\n", "-")
	got := h.Conflicts(IDRange{Base: 100000, Size: 65536})
	want := []string{"passwd svc (100500)", "subuid admin:100000:65536", "subgid other:165000:1000"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("conflicts %q, want %q", got, want)
	}
	// root's own subordinate ids are the agent's: no conflict.
	if got := h.Conflicts(IDRange{Base: 200000, Size: 65536}); len(got) != 0 {
		t.Errorf("root's block counted as a conflict: %v", got)
	}
}
