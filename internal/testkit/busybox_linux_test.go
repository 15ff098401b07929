package testkit

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestBusyboxImageRuns unpacks the image (our own trusted tar) and runs its
// /bin/sh: chrooted when root, so that /bin/sh resolves inside the image.
func TestBusyboxImageRuns(t *testing.T) {
	requireBusybox(t)
	img, err := BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode).Perm())
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, os.FileMode(h.Mode).Perm())
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("/bin/sh", "-c", "echo hello from $(readlink /bin/sh); cat /etc/group | wc -l")
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		cmd.Dir = "/"
	} else {
		t.Log("not root: running the image's busybox without chroot")
		cmd = &exec.Cmd{Path: filepath.Join(root, "bin/busybox"), Args: []string{"sh", "-c", "echo hello from /bin/busybox; echo 2"}}
	}
	cmd.Env = []string{"PATH=/bin:/usr/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("running the image's shell: %v: %s", err, out)
	}
	if got := strings.Fields(string(out)); strings.Join(got, " ") != "hello from /bin/busybox 2" {
		t.Fatalf("output %q", out)
	}
}
