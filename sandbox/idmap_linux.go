package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// newUsernsFD returns an fd of a user namespace that maps container ids
// 0..size-1 to host ids base..base+size-1. A helper child (this binary,
// re-executed through Init) creates the namespace; the fd keeps it alive
// after the child exits.
func newUsernsFD(base, size uint32) (*os.File, error) {
	// Pdeathsig is sent when the thread that forked the child ends: a
	// thread libcontainer leaves locked ends with its goroutine, and with
	// Managers starting at once (several in a process) the helper was
	// killed under this one (TestConcurrentJoins). The fork and the wait
	// happen on this thread, kept until the helper is done.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command("/proc/self/exe", usernsHolderArg)
	cmd.Args[0] = os.Args[0]
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: int(size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(base), Size: int(size)}},
		Pdeathsig:   syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// From the thread that never ends: the helper's parent-death signal
	// must not come while it is still needed.
	if err := startLongLived(cmd); err != nil {
		return nil, fmt.Errorf("starting user namespace helper: %w", err)
	}
	f, openErr := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user")
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil && openErr == nil {
		f.Close()
		return nil, fmt.Errorf("user namespace helper: %w", err)
	}
	if openErr != nil {
		return nil, fmt.Errorf("opening helper user namespace: %w", openErr)
	}
	return f, nil
}

// idmapMount attaches at target an idmapped, non-recursive bind mount of
// source that shows files through the user namespace usernsFD.
func idmapMount(source, target string, usernsFD *os.File, readOnly bool) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", source, err)
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFD.Fd())}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("idmapping %s: %w", source, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching idmapped %s: %w", source, err)
	}
	return nil
}
