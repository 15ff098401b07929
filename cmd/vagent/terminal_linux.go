package main

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// userTerminal is the terminal vagent runs on, lent to an interactive
// shell in a sandbox (vagent build --inspect): raw while the shell runs,
// its size passed on, as docker run -it and runc run -t do.
type userTerminal struct {
	in, out *os.File
	saved   *unix.Termios
}

// errNoTerminal: standard input is not a terminal.
var errNoTerminal = errors.New("standard input is not a terminal")

// isTerminalFile tells whether f is a terminal.
func isTerminalFile(f *os.File) bool {
	if f == nil {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// openUserTerminal makes in (a terminal) raw; restore undoes it.
func openUserTerminal(in, out *os.File) (*userTerminal, error) {
	if !isTerminalFile(in) {
		return nil, errNoTerminal
	}
	fd := int(in.Fd())
	saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *saved
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return &userTerminal{in: in, out: out, saved: saved}, nil
}

// restore gives the terminal its settings back.
func (t *userTerminal) restore() {
	_ = unix.IoctlSetTermios(int(t.in.Fd()), unix.TCSETS, t.saved)
}

// resize gives master the user terminal's size.
func (t *userTerminal) resize(master *os.File) {
	if ws, err := unix.IoctlGetWinsize(int(t.in.Fd()), unix.TIOCGWINSZ); err == nil && ws.Row > 0 {
		_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, ws)
	}
}

// attach copies the user's keys to the shell's terminal master and the
// shell's output to the user, and follows the user terminal's size, until
// a read of master fails (the shell ended). It is sandbox.Spec.Terminal.
func (t *userTerminal) attach(master *os.File) {
	t.resize(master)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	defer signal.Stop(winch)
	// The keys: poll standard input and a stop pipe, so that the reader
	// ends with the shell rather than at the user's next key.
	stopR, stopW, err := os.Pipe()
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stopR.Close()
		buf := make([]byte, 4096)
		fds := []unix.PollFd{{Fd: int32(t.in.Fd()), Events: unix.POLLIN}, {Fd: int32(stopR.Fd()), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return
			}
			if fds[1].Revents != 0 {
				return
			}
			if fds[0].Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR) == 0 {
				continue
			}
			n, err := unix.Read(int(t.in.Fd()), buf)
			if n <= 0 || err != nil {
				return
			}
			if _, err := master.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	stopWinch := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-winch:
				t.resize(master)
			case <-stopWinch:
				return
			}
		}
	}()
	_, _ = io.Copy(t.out, master)
	stopW.Close()
	close(stopWinch)
	wg.Wait()
}
