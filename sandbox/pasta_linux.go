package sandbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pastaReadyTimeout bounds the time pasta takes to set up a namespace.
const pastaReadyTimeout = 15 * time.Second

// pastaArgs are pasta's options for the namespace at nsPath. Every port
// forwarding is off explicitly: pasta's defaults ("auto") would forward
// the ports a build binds to the host (-t, -u) and the host's loopback
// ports into the build (-T, -U). --no-map-gw keeps the gateway address
// from meaning the host's loopback. DHCP, DHCPv6 and router advertisements
// are off (--config-net configures the interface): less for a build to
// talk to. pasta runs with the agent's identity (--runas 0:0: root of the
// agent's user namespace) because it must enter a namespace the agent owns;
// it drops every capability but CAP_SYS_ADMIN and CAP_NET_BIND_SERVICE,
// moves into empty mount, IPC and UTS namespaces and filters its system
// calls. It writes its pid to descriptor 3 once the namespace is
// configured: the signal that it is ready.
func pastaArgs(nsPath string) []string {
	return []string{
		"--foreground", "--quiet", "--config-net",
		"--netns", nsPath, "--netns-only", "--runas", "0:0",
		"--tcp-ports", "none", "--udp-ports", "none", "--tcp-ns", "none", "--udp-ns", "none",
		"--no-map-gw", "--no-dhcp", "--no-dhcpv6", "--no-ra",
		"--pid", "/dev/fd/3",
	}
}

// pasta is a running pasta process serving one run's namespace.
type pasta struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed once the process was waited for
	ready  chan error    // the pid pipe's verdict: nil once pasta is ready
	stderr *boundedBuffer
}

// pastaBinary returns the pasta binary to run.
func (m *Manager) pastaBinary() (string, error) {
	bin := m.opts.pasta
	if bin == "" {
		bin = "pasta"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%w: pasta not found (install passt: apt install passt, pacman -S passt, dnf install passt): %w", ErrNetworkUnavailable, err)
	}
	// On a CPU with AVX2, pasta executes its .avx2 build first thing:
	// start that one directly, one exec less per run.
	if avx2, err := exec.LookPath(p + ".avx2"); err == nil && cpuHasAVX2() {
		return avx2, nil
	}
	return p, nil
}

// cpuHasAVX2 tells whether the CPU has AVX2 (the flags of /proc/cpuinfo).
var cpuHasAVX2 = sync.OnceValue(func() bool {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "flags" {
			return slices.Contains(strings.Fields(v), "avx2")
		}
	}
	return false
})

// tunUsable tells why pasta, running as the agent, cannot open
// /dev/net/tun, or nil. Root opens it whatever its mode; a rootless
// agent's pasta only when the mode lets every user (0666, as udev's
// default rules make it).
func tunUsable() error {
	fi, err := os.Stat("/dev/net/tun")
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("%w: no /dev/net/tun, which pasta needs: load the tun module (modprobe tun); in a container or pod, give it the device /dev/net/tun (docs/deploy.md)", ErrNetworkUnavailable)
	}
	if InUserNamespace() && unix.Access("/dev/net/tun", unix.R_OK|unix.W_OK) != nil {
		return fmt.Errorf("%w: /dev/net/tun (mode %#o) cannot be opened by ordinary users, whose pasta needs it: "+
			"sudo chmod 0666 /dev/net/tun (udev's default rules make it so; a host without udev needs "+
			"echo 'KERNEL==\"tun\", MODE=\"0666\"' | sudo tee /etc/udev/rules.d/50-tun.rules, or the chmod at every boot)",
			ErrNetworkUnavailable, fi.Mode().Perm())
	}
	return nil
}

// startPasta starts pasta for the namespace at nsPath; waitReady tells
// when it has configured the namespace. Its pid is written to pidPath for
// the recovery after a crash of the agent.
func (m *Manager) startPasta(nsPath, pidPath string) (_ *pasta, retErr error) {
	bin, err := m.pastaBinary()
	if err != nil {
		return nil, err
	}
	if err := tunUsable(); err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p := &pasta{done: make(chan struct{}), ready: make(chan error, 1), stderr: &boundedBuffer{max: 4096}}
	p.cmd = exec.Command(bin, pastaArgs(nsPath)...)
	p.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	p.cmd.Stderr = p.stderr
	p.cmd.ExtraFiles = []*os.File{pw}
	// pasta dies with the agent: the signal is tied to the thread that
	// started it, which startLongLived keeps for the life of the process.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = startLongLived(p.cmd)
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("%w: starting pasta: %w", ErrNetworkUnavailable, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	go func() {
		defer pr.Close()
		line, err := bufio.NewReader(pr).ReadString('\n')
		if err == nil && strings.TrimSpace(line) == "" {
			err = errors.New("empty pid")
		}
		p.ready <- err
	}()
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(p.cmd.Process.Pid)+"\n"), 0o600); err != nil {
		_ = p.stop()
		return nil, err
	}
	return p, nil
}

// waitReady waits until pasta has configured the namespace.
func (p *pasta) waitReady(ctx context.Context) error {
	t := time.NewTimer(pastaReadyTimeout)
	defer t.Stop()
	select {
	case err := <-p.ready:
		p.ready <- err // for a later call
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
		case <-t.C:
		}
		return fmt.Errorf("%w: pasta failed: %s", ErrNetworkUnavailable, p.reason())
	case <-p.done:
		return fmt.Errorf("%w: pasta failed: %s", ErrNetworkUnavailable, p.reason())
	case <-t.C:
		return fmt.Errorf("%w: pasta did not set up the network within %s", ErrNetworkUnavailable, pastaReadyTimeout)
	case <-ctx.Done():
		return fmt.Errorf("not started: %w", ctx.Err())
	}
}

// reason describes why pasta ended, from its exit status and its stderr.
func (p *pasta) reason() string {
	msg := strings.TrimSpace(p.stderr.String())
	// Lines about syslog are noise when pasta runs without one.
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		if l != "" && !strings.HasPrefix(l, "Failed to send ") {
			lines = append(lines, l)
		}
	}
	state := "exited"
	if p.cmd.ProcessState != nil {
		state = p.cmd.ProcessState.String()
	}
	if len(lines) == 0 {
		return state
	}
	return state + ": " + strings.Join(lines, "; ")
}

// kill sends pasta SIGKILL, without waiting for it to exit.
func (p *pasta) kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing pasta: %w", err)
	}
	return nil
}

// stop kills pasta and waits for it: once it returned, pasta's interface
// is gone from the namespace (it goes with pasta's descriptor of it).
func (p *pasta) stop() error {
	err := p.kill()
	<-p.done
	return err
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.b); room > 0 {
		b.b = append(b.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}
