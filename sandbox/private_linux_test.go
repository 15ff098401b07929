package sandbox_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestPrivateHostPaths: the lower, a writable shared directory and a
// read-only one all lie below a directory only host root may enter; a run
// still gets all three (the agent opens the lower with open_tree, and
// libcontainer opens bind sources its init cannot reach on the host side).
// What container root writes into the shared directory, mounted without
// id mapping, is owned by the mapped root on the host. The runs/ and kept/
// directories holding uppers are 0700.
func TestPrivateHostPaths(t *testing.T) {
	e := newManager(t)
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	lower := filepath.Join(private, "rootfs")
	if err := os.Rename(sandboxtest.BusyboxRootfs(t), lower); err != nil {
		t.Fatal(err)
	}
	uid, gid, _ := e.m.IDRange()
	shared, ctl := filepath.Join(private, "shared"), filepath.Join(private, "ctl")
	for _, d := range []string{shared, ctl} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(shared, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctl, "hello"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, out := sh(t, e.m, lower, "cat /ctl/hello && echo x >/shared/f && stat -c 'inside %u:%g' /shared/f", func(s *sandbox.Spec) {
		s.Mounts = []sandbox.Mount{{Source: ctl, Target: "/ctl", ReadOnly: true}, {Source: shared, Target: "/shared"}}
	})
	if res.ExitCode != 0 || !strings.Contains(out, "from the host") || !strings.Contains(out, "inside 0:0") {
		t.Fatalf("exit %d, output %q", res.ExitCode, out)
	}
	fi, err := os.Stat(filepath.Join(shared, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
		t.Errorf("file written by container root is %d:%d on the host, want the mapped root %d:%d", st.Uid, st.Gid, uid, gid)
	}
	for _, c := range []struct {
		dir      string
		uid, gid uint32
	}{{"runs", uid, gid}, {"kept", 0, 0}} {
		fi, err := os.Stat(filepath.Join(e.m.InstanceDir(), c.dir))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o700 || st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("%s: %v %d:%d, want 0700 %d:%d", c.dir, fi.Mode().Perm(), st.Uid, st.Gid, c.uid, c.gid)
		}
	}
}
