// Package sandboxtest builds small root filesystems for tests of code that
// runs sandboxes.
package sandboxtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Dir returns a new temporary directory that every user may traverse (a
// user-namespaced container's init must resolve paths below it). It is
// removed when the test ends.
func Dir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/" && p != "."; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, fi.Mode().Perm()|0o011); err != nil {
				t.Fatal(err)
			}
		}
	}
	return d
}

// BusyboxRootfs builds a root filesystem in a new directory from the host's
// static busybox: /bin holds busybox and a symlink per applet, /etc/passwd
// and /etc/group define root (0) and builder (1000, home /home/builder).
// Files are owned by the caller (host root in root tests), unshifted, as an
// image unpacker produces them. The test is skipped when busybox-static is
// not installed.
func BusyboxRootfs(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skipf("needs %s (Debian package busybox-static): %v", BusyboxPath, err)
	}
	root := filepath.Join(Dir(t), "rootfs")
	for _, d := range []string{"bin", "etc", "root", "home/builder", "tmp", "proc", "dev", "sys", "var/tmp", "usr/bin", "work"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "root"), 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(filepath.Join(root, "home/builder"), 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000:builder:/home/builder:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":    "root:x:0:\nwheel:x:10:builder\nbuilder:x:1000:\nnobody:x:65534:\n",
		"etc/hostname": "rootfs\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// Buffer is an io.Writer safe for concurrent use: for a sandbox's (or a
// child process's) output that the test reads while it is being written.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Reset discards what was written so far.
func (s *Buffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// ShiftTree adds by to the owner and group of every entry of root (not
// following symbolic links), as an unpacker shifting ids would have made
// them: the lower of a rootless sandbox (sandbox.LowerShift), seen from
// the host, is owned by the user's subordinate ids. It needs root.
func ShiftTree(t testing.TB, root string, by int) {
	t.Helper()
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode()
		if err := os.Lchown(p, int(st.Uid)+by, int(st.Gid)+by); err != nil {
			return err
		}
		if mode&(os.ModeSetuid|os.ModeSetgid) != 0 && mode&os.ModeSymlink == 0 {
			return os.Chmod(p, mode) // chown cleared them
		}
		return nil
	})
	if err != nil {
		t.Fatalf("shifting %s: %v", root, err)
	}
}
