package sandbox_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestCheckHostDataDir: CheckHost creates nothing — a data dir that does
// not exist is probed in the directory that will hold it and is not
// created — and on a read-only data dir it says so in one MISSING line,
// the probes that need it "not tried", never ok for disk space.
func TestCheckHostDataDir(t *testing.T) {
	needRoot(t)
	base := sandboxtest.Dir(t)
	missing := filepath.Join(base, "a", "data")
	reqs, err := sandbox.CheckHost(missing)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]sandbox.Requirement{}
	for _, r := range reqs {
		got[r.Name] = r
	}
	if r := got["data dir"]; !r.OK || !strings.Contains(r.Detail, "does not exist yet: vagent run creates it in "+base) {
		t.Errorf("data dir: %+v", r)
	}
	if r := got["overlayfs"]; !r.OK {
		t.Errorf("overlayfs, probed in %s: %+v", base, r)
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Errorf("CheckHost left %v in %s", ents, base)
	}

	ro := filepath.Join(base, "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=1m"); err != nil {
		t.Skipf("cannot mount a read-only tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ro, unix.MNT_DETACH) })
	reqs, err = sandbox.CheckHost(ro)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		switch r.Name {
		case "data dir":
			if r.OK || !strings.Contains(r.Detail, "read-only") {
				t.Errorf("data dir on a read-only mount: %+v", r)
			}
		case "overlayfs", "idmapped lower", "build limits", "disk space":
			if r.OK || !strings.Contains(r.Detail, "not tried: the data dir is not writable") {
				t.Errorf("%s on a read-only data dir: %+v", r.Name, r)
			}
		}
	}
}
