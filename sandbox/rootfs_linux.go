package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// runDirs are the directories of one run under <data>/runs/<id>.
type runDirs struct {
	base   string // <data>/runs/<id>
	lower  string // idmapped view of Spec.Lower (user namespace only)
	upper  string
	work   string
	rootfs string // overlay (or read-only lower) mount point
	netns  string // <data>/netns/<id>: the isolated network's namespace, bind-mounted
}

func newRunDirs(runsDir, netnsDir, id string) runDirs {
	b := filepath.Join(runsDir, id)
	return runDirs{
		base:   b,
		lower:  filepath.Join(b, "lower"),
		upper:  filepath.Join(b, "upper"),
		work:   filepath.Join(b, "work"),
		rootfs: filepath.Join(b, "rootfs"),
		netns:  filepath.Join(netnsDir, id),
	}
}

// runDirs returns the directories of run id: below runs/, and in rootless
// mode its root filesystem's mount point below the runs' tmpfs (runsMount).
func (m *Manager) runDirs(id string) runDirs {
	d := newRunDirs(m.runsDir, m.netnsDir, id)
	if m.mntDir != nil {
		d.rootfs = filepath.Join(m.mntDir.dir, id)
	}
	return d
}

// mountRootfs prepares d.rootfs for a run of spec. On error it leaves
// mounts behind for unmountRun to remove.
func (m *Manager) mountRootfs(spec *Spec, d runDirs) error {
	if err := os.Mkdir(d.base, 0o711); err != nil {
		return err
	}
	for _, dir := range []string{d.lower, d.rootfs} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
	}
	if spec.ReadOnly {
		if m.usernsFD != nil {
			return idmapMount(spec.Lower, d.rootfs, m.usernsFD, true)
		}
		if err := unix.Mount(spec.Lower, d.rootfs, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding lower: %w", err)
		}
		if m.rootless {
			// A remount would have to repeat the flags a user namespace
			// may not clear (nosuid, nodev of the host's mount): set only
			// read-only.
			return unix.MountSetattr(-1, d.rootfs, 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		}
		return unix.Mount("", d.rootfs, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
	}
	lower := spec.Lower
	if m.usernsFD != nil {
		if err := idmapMount(spec.Lower, d.lower, m.usernsFD, true); err != nil {
			return err
		}
		lower = d.lower
	}
	if err := os.Mkdir(d.work, 0o755); err != nil {
		return err
	}
	if spec.Upper != nil {
		// An upper an earlier run kept: moved in for this run (teardown
		// moves it back), so that a crash leaves it where recovery
		// removes runs.
		if filepath.Dir(spec.Upper.Path) != m.keptDir {
			return fmt.Errorf("%w: %s is not an upper this Manager kept", ErrInvalidSpec, spec.Upper.Path)
		}
		if err := os.Rename(spec.Upper.Path, d.upper); err != nil {
			return fmt.Errorf("taking the kept upper: %w", err)
		}
	} else {
		if err := os.Mkdir(d.upper, 0o755); err != nil {
			return err
		}
		// The upper's root is the container's "/": owned by container root.
		if err := os.Chown(d.upper, int(m.rootUID), int(m.rootGID)); err != nil {
			return err
		}
		fi, err := os.Stat(spec.Lower)
		if err != nil {
			return err
		}
		if err := os.Chmod(d.upper, fi.Mode().Perm()); err != nil {
			return err
		}
	}
	// volatile: no syncfs of the upper's filesystem at unmount, which made
	// teardown wait for unrelated disk I/O. A crash loses nothing of value:
	// New removes every upper left by a crash anyway.
	opts := "lowerdir=" + lower + ",upperdir=" + d.upper + ",workdir=" + d.work + overlayOptions(m.rootless)
	if err := unix.Mount("overlay", d.rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mounting overlay: %w", err)
	}
	return nil
}

// unmountRun detaches every mount of a run, deepest first. Missing mounts
// are not an error.
func unmountRun(d runDirs) error {
	var errs []error
	for _, p := range []string{d.rootfs, d.lower, d.netns} {
		for {
			err := unix.Unmount(p, unix.MNT_DETACH)
			if err == nil {
				continue // stacked mounts: unmount until none is left
			}
			if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
			}
			break
		}
	}
	return errors.Join(errs...)
}

// overlayOptions are the overlay mount options after the directories. In
// a user namespace overlayfs keeps its attributes in user.overlay.*
// (userxattr; trusted.* needs host root), where it refuses to follow
// redirects: redirect_dir=nofollow rather than off (off follows them).
func overlayOptions(rootless bool) string {
	if rootless {
		return ",userxattr,redirect_dir=nofollow,metacopy=off,index=off,volatile"
	}
	return ",redirect_dir=off,metacopy=off,index=off,volatile"
}
