package sandbox

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkLowerShift compares the two ways of making an unshifted image
// rootfs usable as the lower of a user-namespaced container: an idmapped
// bind mount made per run (what sandbox does) and a copy chowned by the id
// base, made once per image. Set VAGENT_SHIFT_TREE to a larger rootfs (e.g.
// an unpacked Arch image) to measure a real image; the default is /usr/lib
// of the host as a stand-in of a few thousand files.
func BenchmarkLowerShift(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	src := os.Getenv("VAGENT_SHIFT_TREE")
	if src == "" {
		src = "/usr/lib/x86_64-linux-gnu"
	}
	if _, err := os.Stat(src); err != nil {
		b.Skip(err)
	}
	fd, err := newUsernsFD(100000, 65536)
	if err != nil {
		b.Fatal(err)
	}
	defer fd.Close()
	dir := b.TempDir()
	target := filepath.Join(dir, "mnt")
	if err := os.Mkdir(target, 0o755); err != nil {
		b.Fatal(err)
	}
	const rounds = 20
	var idmap, copyShift time.Duration
	for i := range rounds {
		s := time.Now()
		if err := idmapMount(src, target, fd, true); err != nil {
			b.Fatal(err)
		}
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			b.Fatal(err)
		}
		idmap += time.Since(s)
		if i < 3 { // copies are slow: a few suffice
			dst := filepath.Join(dir, "copy")
			s = time.Now()
			if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
				b.Fatalf("cp: %v %s", err, out)
			}
			err := filepath.Walk(dst, func(p string, fi os.FileInfo, err error) error {
				if err != nil {
					return err
				}
				st := fi.Sys().(*syscall.Stat_t)
				return os.Lchown(p, int(st.Uid)+100000, int(st.Gid)+100000)
			})
			if err != nil {
				b.Fatal(err)
			}
			copyShift += time.Since(s)
			_ = os.RemoveAll(dst)
		}
	}
	b.ReportMetric(float64(idmap.Microseconds())/rounds/1000, "idmap-ms/run")
	b.ReportMetric(float64(copyShift.Microseconds())/3/1000, "shiftedcopy-ms/image")
}
