package testkit

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// HostAddr returns a global unicast IPv4 address of one of the host's
// interfaces, or skips tb when it has none.
func HostAddr(tb testing.TB) netip.Addr {
	tb.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		tb.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Addr().IsGlobalUnicast() {
			return p.Addr()
		}
	}
	tb.Skip("the host has no global IPv4 address")
	return netip.Addr{}
}

// FreePort returns a TCP port that is free on every address of the host
// now.
func FreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// NetnsHolders lists the threads (their /proc/PID/task/TID/ns/net) whose
// network namespace has inode ino: none once a build's namespace is gone.
func NetnsHolders(ino uint64) []string {
	var out []string
	files, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	for _, f := range files {
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); err == nil && st.Ino == ino {
			out = append(out, f)
		}
	}
	return out
}

// PastaProcs lists the pasta processes serving network namespaces below
// dir (a data directory): their pid files and command lines.
func PastaProcs(dir string) []string {
	var out []string
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, dir) && strings.Contains(cmd, "--netns") {
			out = append(out, f+": "+cmd)
		}
	}
	return out
}
