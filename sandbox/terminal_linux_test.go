package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestRunOnKeptUpper: a second run on the upper a first run kept sees
// the first run's files (and its deletions), writes over them, and leaves
// the upper at its path, the caller's to release; nothing else is left.
func TestRunOnKeptUpper(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	res, out := sh(t, e.m, rootfs, `mkdir -p /build && echo first > /build/tree && rm /etc/hostname`,
		func(s *sandbox.Spec) { s.KeepUpper = true })
	if res.ExitCode != 0 || res.Upper == nil {
		t.Fatalf("first run: exit %d upper %v: %s", res.ExitCode, res.Upper, out)
	}
	u := res.Upper
	path := u.Path
	res2, out := sh(t, e.m, rootfs, `cat /build/tree; test -e /etc/hostname && echo hostname back; echo second > /build/more`,
		func(s *sandbox.Spec) { s.Upper = u })
	if res2.ExitCode != 0 || out != "first\n" {
		t.Fatalf("second run: exit %d, output %q; want the first run's tree", res2.ExitCode, out)
	}
	if res2.Upper != u || u.Path != path {
		t.Errorf("second run's upper %v at %s, want the same at %s", res2.Upper, u.Path, path)
	}
	if data, err := os.ReadFile(filepath.Join(path, "build/more")); err != nil || string(data) != "second\n" {
		t.Errorf("the second run's write is not in the kept upper: %q %v", data, err)
	}
	if err := u.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("upper still there after Release: %v", err)
	}
	// An upper that is not one this Manager kept is refused.
	other := t.TempDir()
	_, err := e.m.Run(t.Context(), sandbox.Spec{Lower: rootfs, Args: []string{"true"}, Env: pathEnv,
		Upper: sandbox.NewUpper(other, 0, 0, nil)})
	if !errors.Is(err, sandbox.ErrInvalidSpec) {
		t.Errorf("foreign upper: err = %v, want ErrInvalidSpec", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("the foreign directory was touched: %v", err)
	}
}

// TestTerminal: a run with a terminal gets a pseudo-terminal of the
// container's own as its standard streams and controlling terminal; what
// is typed reaches it, what it prints comes back, and its exit status is
// the run's.
func TestTerminal(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	var mu sync.Mutex
	var screen bytes.Buffer
	attached := make(chan struct{})
	spec := sandbox.Spec{
		Lower: rootfs, Env: append(pathEnv, "PS1=inside$ "),
		Args:   []string{"/bin/sh", "-i"},
		Output: io.Discard,
		Terminal: func(master *os.File) {
			defer close(attached)
			go func() {
				_, _ = io.WriteString(master, "tty; [ -t 0 ] && echo stdin-is-a-terminal; exit 7\n")
			}()
			buf := make([]byte, 4096)
			for {
				n, err := master.Read(buf)
				mu.Lock()
				screen.Write(buf[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		},
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	res, err := e.m.Run(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	<-attached
	mu.Lock()
	out := strings.ReplaceAll(screen.String(), "\r\n", "\n")
	mu.Unlock()
	if res.ExitCode != 7 {
		t.Errorf("exit %d, want the shell's 7:\n%s", res.ExitCode, out)
	}
	for _, want := range []string{"\n/dev/pts/0\n", "\nstdin-is-a-terminal\n", "inside$ "} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal lacks %q:\n%s", want, out)
		}
	}
}
