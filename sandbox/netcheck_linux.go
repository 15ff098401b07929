package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CheckNetwork tells whether isolated runs can get their network on this
// host: it makes one as a run does (a network namespace with its rules,
// and pasta attached to it) and removes it. The error says what is
// missing and how to fix it; it wraps ErrNetworkUnavailable.
func (m *Manager) CheckNetwork(ctx context.Context) error {
	_, err := probeNetwork(ctx, m.dataDir, m.opts)
	return err
}

// probeNetwork makes and removes an isolated network under dir and
// describes it.
func probeNetwork(ctx context.Context, dir string, o options) (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: an ordinary user's agent makes its builds' networks in its own user namespace (EnterUserNamespace)", ErrNetworkUnavailable)
	}
	m := &Manager{opts: o}
	bin, err := m.pastaBinary()
	if err != nil {
		return "", err
	}
	if err := tunUsable(); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "netcheck-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	d := newRunDirs(tmp, filepath.Join(tmp, "netns"), "probe")
	for _, dir := range []string{d.base, filepath.Dir(d.netns)} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return "", err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	n, err := m.setupNetwork(ctx, &Spec{}, d, o.log)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return "", fmt.Errorf("%w: cannot create network namespaces: %w (the agent needs CAP_SYS_ADMIN: run it as root, in a privileged pod)", ErrNetworkUnavailable, err)
		}
		if !errors.Is(err, ErrNetworkUnavailable) {
			err = fmt.Errorf("%w: %w", ErrNetworkUnavailable, err)
		}
		return "", err
	}
	err = n.waitReady(ctx)
	took := time.Since(start)
	var links []string
	if err == nil {
		err = inNetns(n.nsPath, func() error {
			var err error
			links, err = nsLinks()
			return err
		})
	}
	if cerr := n.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNetworkUnavailable, err)
	}
	var ifaces []string
	for _, l := range links {
		if l != "lo" {
			ifaces = append(ifaces, l)
		}
	}
	if len(ifaces) == 0 {
		return "", fmt.Errorf("%w: pasta gave the namespace no interface (does the host have a default route? pasta copies the interface that has it)", ErrNetworkUnavailable)
	}
	return fmt.Sprintf("%s gave a new network namespace interface %s in %s", filepath.Base(bin), strings.Join(ifaces, ", "), took.Round(time.Millisecond)), nil
}
