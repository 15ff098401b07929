package job_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestDataDirPlaces builds and publishes a package with the agent's data
// directory (the sandbox's and the Runner's) in places an operator
// chooses: a bind mount, a filesystem of its own, and a path through a
// symbolic link. The agent opens the build's packages below the upper
// directory without following links or crossing mounts, but the path to
// the upper itself is the host's and may do both.
func TestDataDirPlaces(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, tc := range []struct {
		name string
		// place returns the data directory, below base.
		place func(t *testing.T, base string) string
	}{
		{"bind mount", func(t *testing.T, base string) string {
			src, dst := filepath.Join(base, "src"), filepath.Join(base, "data")
			mkdirs(t, src, dst)
			mount(t, src, dst, "", unix.MS_BIND, "")
			return dst
		}},
		{"own filesystem", func(t *testing.T, base string) string {
			dst := filepath.Join(base, "data")
			mkdirs(t, dst)
			mount(t, "tmpfs", dst, "tmpfs", 0, "mode=0711,size=512m")
			return dst
		}},
		{"symlinked parent", func(t *testing.T, base string) string {
			real := filepath.Join(base, "real")
			mkdirs(t, filepath.Join(real, "data"))
			if err := os.Symlink(real, filepath.Join(base, "link")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(base, "link", "data")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := tc.place(t, sandboxtest.Dir(t))
			sb, err := sandbox.New(filepath.Join(data, "sandbox"), sandbox.WithSeccomp(sandbox.SeccompSupported))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sb.Close() })
			b, err := job.New(sb, e.images, filepath.Join(data, "build"),
				job.WithServer(serverClient(t, e.ts.URL)), job.WithArch("x86_64"), netOpt())
			if err != nil {
				t.Fatal(err)
			}
			repo := newRepo()
			url := serveFile(t, pkgbuild("placed", "1", "1"))
			r, log := runJob(t, b, poll.Job{TargetID: 40, Kind: "url", URL: url, Repo: repo, BaseImage: e.base})
			wantStatus(t, r, log, poll.ResultSuccess, 0)
			if pkgs := e.srv.Packages(repo, "x86_64"); len(pkgs) != 1 || pkgs[0].Info.Name != "placed" {
				t.Errorf("repository has %+v", pkgs)
			}
		})
	}
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
}

// mount mounts and unmounts at the end of the test (after the cleanups
// registered later, such as closing a sandbox Manager on it).
func mount(t *testing.T, src, dst, fstype string, flags uintptr, data string) {
	t.Helper()
	if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
		t.Fatalf("mount %s on %s: %v", src, dst, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dst, err)
		}
	})
}
