package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// idHost writes fake host files for probeRootless: /etc/subuid and
// /etc/subgid, sysctls, and a directory of id map tools.
type idHost struct {
	t   *testing.T
	dir string
	HostFiles
}

func newIDHost(t *testing.T) *idHost {
	dir := t.TempDir()
	h := &idHost{t: t, dir: dir, HostFiles: HostFiles{
		Subuid: filepath.Join(dir, "subuid"), Subgid: filepath.Join(dir, "subgid"),
		Sysctl: filepath.Join(dir, "sys"), Path: filepath.Join(dir, "bin"),
	}}
	for _, d := range []string{"sys/kernel", "sys/user", "bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *idHost) write(rel, content string, mode os.FileMode) {
	h.t.Helper()
	p := filepath.Join(h.dir, rel)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		h.t.Fatal(err)
	}
}

// TestRootlessPrerequisites: what rootless mode lacks on a host, from fake
// host files — no subordinate ids (and too few), no newuidmap, a
// newuidmap that is not setuid, unprivileged user namespaces disabled by
// Debian's sysctl, by user.max_user_namespaces and by Ubuntu's AppArmor
// restriction — each named with the command that fixes it.
func TestRootlessPrerequisites(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the fake newuidmap must be setuid root: needs root")
	}
	me := "alice"
	good := func(h *idHost) {
		h.write("subuid", "bob:100000:65536\nalice:165536:65536\n", 0o644)
		h.write("subgid", "bob:100000:65536\n4242:165536:65536\n", 0o644)
		h.write("sys/kernel/unprivileged_userns_clone", "1\n", 0o644)
		h.write("sys/user/max_user_namespaces", "63000\n", 0o644)
		h.write("bin/newuidmap", "", 0o755|os.ModeSetuid)
		h.write("bin/newgidmap", "", 0o755|os.ModeSetuid)
	}
	for _, tc := range []struct {
		name    string
		change  func(h *idHost)
		missing map[string]string // requirement -> detail substring
	}{
		{"all there", func(*idHost) {}, nil},
		{"no subuid entry", func(h *idHost) { h.write("subuid", "bob:100000:65536\n", 0o644) },
			map[string]string{"subordinate ids": "user alice has no entry in /etc/subuid: sudo usermod --add-subuids 262144-327679 --add-subgids 262144-327679 alice"}},
		{"no entries", func(h *idHost) { _ = os.Remove(h.Subuid); _ = os.Remove(h.Subgid) },
			map[string]string{"subordinate ids": "no entry in /etc/subuid and /etc/subgid: sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice"}},
		{"too few", func(h *idHost) { h.write("subuid", "alice:165536:1000\n", 0o644) },
			map[string]string{"subordinate ids": "has 1000 subordinate uids and 65536 gids, builds need 65536"}},
		{"two blocks add up", func(h *idHost) { h.write("subuid", "alice:165536:32768\nalice:300000:32768\n", 0o644) }, nil},
		{"no newuidmap", func(h *idHost) { _ = os.Remove(filepath.Join(h.dir, "bin/newuidmap")) },
			map[string]string{"newuidmap": "newuidmap not found: sudo apt-get install uidmap"}},
		{"newgidmap not setuid", func(h *idHost) { h.write("bin/newgidmap", "", 0o755) },
			map[string]string{"newgidmap": "is neither setuid root nor has cap_setuid/cap_setgid: sudo chmod u+s"}},
		{"debian sysctl", func(h *idHost) { h.write("sys/kernel/unprivileged_userns_clone", "0\n", 0o644) },
			map[string]string{"user namespaces": "sudo sysctl -w kernel.unprivileged_userns_clone=1"}},
		{"no user namespaces at all", func(h *idHost) { h.write("sys/user/max_user_namespaces", "0\n", 0o644) },
			map[string]string{"user namespaces": "sudo sysctl -w user.max_user_namespaces=15000"}},
		{"apparmor", func(h *idHost) { h.write("sys/kernel/apparmor_restrict_unprivileged_userns", "1\n", 0o644) },
			map[string]string{"user namespaces": "userns,\\n}\\n' | sudo tee /etc/apparmor.d/vagent && sudo apparmor_parser -r /etc/apparmor.d/vagent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newIDHost(t)
			good(h)
			tc.change(h)
			f := probeRootless(h.HostFiles, 4242, 4242)
			f.user = me // uid 4242 has no name on the test host
			f.subuid, _ = ReadSubIDs(h.Subuid, me, 4242)
			f.subgid, _ = ReadSubIDs(h.Subgid, me, 4242)
			got := map[string]string{}
			for _, r := range evaluateRootless(f) {
				if !r.OK {
					got[r.Name] = r.Detail
				}
			}
			if len(got) != len(tc.missing) {
				t.Errorf("missing %v, want %v", got, tc.missing)
			}
			for name, sub := range tc.missing {
				if !strings.Contains(got[name], sub) {
					t.Errorf("%s: detail %q lacks %q", name, got[name], sub)
				}
			}
		})
	}
}

// TestRootlessHostEvaluate: vagent check's lines for a rootless agent in
// and out of its namespace, with and without a delegated cgroup and
// configured limits.
func TestRootlessHostEvaluate(t *testing.T) {
	rf := rootlessFacts{user: "alice", uid: 1000, gid: 1000,
		subuid: SubIDs{{Base: 165536, Size: 65536}}, subgid: SubIDs{{Base: 165536, Size: 65536}},
		newuidmap: "/usr/bin/newuidmap", newgidmap: "/usr/bin/newgidmap", newuidmapOK: true, newgidmapOK: true}
	inside := func() hostFacts {
		f := goodFacts()
		f.rootless, f.inUserNS = &rf, true
		f.idBase, f.idSize, f.hostIDs = 1, 65536, "165536-231071"
		return f
	}
	for _, tc := range []struct {
		name    string
		f       func() hostFacts
		missing map[string]string
	}{
		{"inside, delegated", inside, nil},
		{"inside, not delegated, no limits", func() hostFacts {
			f := inside()
			f.undelegated = errors.New("cgroup v1 is not delegated")
			return f
		}, nil},
		{"inside, not delegated, limits configured", func() hostFacts {
			f := inside()
			f.undelegated, f.limitsWanted = errors.New("cgroup v1 is not delegated"), true
			f.limitsErr = errors.New(`limit cannot be applied on this host: memory (controller "memory")`)
			return f
		}, map[string]string{"cgroups": "build_limits cannot be applied", "build limits": `memory (controller "memory")`}},
		{"old kernel", func() hostFacts {
			f := inside()
			f.kernel = "5.10.0-28-amd64"
			return f
		}, map[string]string{"kernel": "older than 5.11"}},
		{"kernel for rootless only", func() hostFacts {
			f := inside()
			f.kernel = "5.15.0-91-generic" // no idmapped overlay lower: rootful needs 5.19
			return f
		}, nil},
		{"no overlay in a user namespace", func() hostFacts {
			f := inside()
			f.overlay = errors.New("operation not permitted")
			return f
		}, map[string]string{"overlayfs": "cannot mount overlayfs in a user namespace"}},
		{"outside", func() hostFacts {
			f := goodFacts()
			noSub := rf
			noSub.subuid, noSub.subgid = nil, nil
			f.root, f.rootless = false, &noSub
			return f
		}, map[string]string{"privileges": "could not enter", "subordinate ids": "sudo usermod", "id range": "not tried",
			"overlayfs": "not tried", "cgroups": "not tried", "build limits": "not tried"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			for _, r := range evaluate(tc.f()) {
				if !r.OK {
					got[r.Name] = r.Detail
				}
			}
			if len(got) != len(tc.missing) {
				t.Errorf("missing %v, want %v", got, tc.missing)
			}
			for name, sub := range tc.missing {
				if !strings.Contains(got[name], sub) {
					t.Errorf("%s: detail %q lacks %q", name, got[name], sub)
				}
			}
		})
	}
}

// TestIDMaps: reading uid_map, the initial namespace, what is mapped.
func TestIDMaps(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "uid_map")
	if err := os.WriteFile(file, []byte("         0       1000          1\n         1     165536      65536\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	maps, err := readIDMap(file)
	if err != nil {
		t.Fatal(err)
	}
	if initialUserNS(maps) {
		t.Error("a rootless map is the initial namespace")
	}
	if !initialUserNS([]idMap{{0, 0, 4294967295}}) {
		t.Error("the identity map is not the initial namespace")
	}
	if !mapped(maps, 1, 65536) || mapped(maps, 1, 65537) || !mapped(maps, 0, 2) {
		t.Error("mapped")
	}
	if h, ok := outside(maps, 1000); !ok || h != 166535 {
		t.Errorf("outside(1000) = %d %v", h, ok)
	}
	if _, ok := outside(maps, 70000); ok {
		t.Error("70000 is mapped")
	}
}
