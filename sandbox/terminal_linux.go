package sandbox

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// terminal is the pseudo-terminal of a run with Spec.Terminal: the
// container's init makes it on the container's /dev/pts (so the container
// holds no file of the host's) and sends its master side back through a
// socket pair, as runc's --console-socket does.
type terminal struct {
	parent, child *os.File // the socket pair: ours, the container's
	master        *os.File
	done          chan struct{} // closed when Spec.Terminal returned
}

// newTerminal makes the socket pair the container's init sends the
// terminal's master through.
func newTerminal() (*terminal, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &terminal{parent: os.NewFile(uintptr(fds[0]), "console-parent"), child: os.NewFile(uintptr(fds[1]), "console-child")}, nil
}

// consoleWait bounds the wait for the master once the process started:
// the init sent it before it executed the process.
const consoleWait = 10 * time.Second

// attach receives the master and hands it to attach in a goroutine.
func (t *terminal) attach(attach func(*os.File)) error {
	t.child.Close()
	defer t.parent.Close()
	tv := unix.NsecToTimeval(consoleWait.Nanoseconds())
	if err := unix.SetsockoptTimeval(int(t.parent.Fd()), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(t.parent.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return fmt.Errorf("receiving the terminal: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("receiving the terminal: %d control messages (%v)", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return fmt.Errorf("receiving the terminal: %d descriptors (%v)", len(fds), err)
	}
	t.master = os.NewFile(uintptr(fds[0]), "terminal-master")
	t.done = make(chan struct{})
	go func() {
		defer close(t.done)
		attach(t.master)
	}()
	return nil
}

// terminalGrace is how long a run waits, once its process ended, for
// Spec.Terminal to copy what the terminal still holds and return.
const terminalGrace = 2 * time.Second

// close waits (briefly) for Spec.Terminal and closes the master. It is
// safe on a terminal that never got one.
func (t *terminal) close() error {
	t.child.Close()
	t.parent.Close()
	if t.master == nil {
		return nil
	}
	select {
	case <-t.done:
	case <-time.After(terminalGrace):
	}
	err := t.master.Close()
	if errors.Is(err, os.ErrClosed) {
		err = nil
	}
	return err
}
