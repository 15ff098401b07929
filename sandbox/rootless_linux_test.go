package sandbox_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

const rootlessEnv = "VAGENT_SANDBOX_TEST_ROOTLESS"

// TestHelperRootless runs as an unprivileged user, started by TestRootless.
func TestHelperRootless(t *testing.T) {
	args := os.Getenv(rootlessEnv)
	if args == "" {
		t.Skip("helper process for TestRootless")
	}
	f := strings.Split(args, "\n")
	m, err := sandbox.New(f[0], sandbox.WithSeccomp(sandbox.SeccompSupported))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	var out bytes.Buffer
	// The isolated network needs a namespace container root does not own.
	_, err = m.Run(context.Background(), sandbox.Spec{Lower: f[1], ReadOnly: true, Args: []string{"true"}})
	fmt.Printf("ISOLATED %v\n", err)
	res, err := m.Run(context.Background(), sandbox.Spec{
		Lower: f[1], ReadOnly: true, Env: pathEnv, Output: &out, Hostname: "rootless", Network: sandbox.NetworkNone,
		Args: []string{"sh", "-c", `echo "$(id -u) $(hostname) $(cat /proc/self/uid_map | tr -s ' ')"; echo x > /tmp/y && cat /tmp/y; touch /x 2>/dev/null || echo ro`},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	fmt.Printf("RESULT %d\n%s", res.ExitCode, out.String())
	// A build's sandbox: an overlay root filesystem, as build runs it.
	_, err = m.Run(context.Background(), sandbox.Spec{Lower: f[1], Args: []string{"true"}, Network: sandbox.NetworkNone})
	fmt.Printf("OVERLAY %v\n", err)
	reqs, err := sandbox.CheckHost(filepath.Join(f[0], "check"))
	if err != nil {
		t.Fatalf("CheckHost: %v", err)
	}
	var missing []string
	for _, r := range reqs {
		if !r.OK {
			missing = append(missing, r.Name)
		}
	}
	fmt.Printf("CHECK missing: %s\n", strings.Join(missing, ", "))
	// The disk limit needs no privilege: a run writing twice its limit
	// into a writable mount is stopped.
	res, err = m.Run(context.Background(), sandbox.Spec{
		Lower: f[1], ReadOnly: true, Env: pathEnv, Limits: &sandbox.Limits{Disk: 64 << 20}, Network: sandbox.NetworkNone,
		Mounts: []sandbox.Mount{{Source: f[2], Target: "/w"}},
		Args:   []string{"sh", "-c", `i=0; while [ $i -lt 8 ]; do dd if=/dev/zero of=/w/f$i bs=1M count=16 2>/dev/null; i=$((i+1)); done; sleep 60`},
	})
	if err != nil {
		t.Fatalf("Run with a disk limit: %v", err)
	}
	fmt.Printf("DISK exceeded %v, exit %d\n", res.DiskExceeded, res.ExitCode)
	// A directory the agent cannot read is not measured as empty.
	_, err = sandbox.DiskUsage(f[3])
	fmt.Printf("UNREADABLE %v\n", err != nil && strings.Contains(err.Error(), "cannot be measured"))
}

// TestRootless runs the test binary as nobody and checks that a rootless
// Manager runs a read-only container as container root mapped to nobody,
// and refuses what rootless mode cannot do — a build's overlay root
// filesystem and the isolated network among it — and that CheckHost
// (`vagent check`) says so: its verdict matches what a build does. The disk
// limit works rootless: a run writing twice its limit into a writable mount
// is stopped, and a directory the agent cannot read counts as unmeasurable,
// not empty.
func TestRootless(t *testing.T) {
	needRoot(t) // to become nobody
	setpriv, err := osexec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	dir := sandboxtest.Dir(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	// The binary, the rootfs and the data directory belong to nobody.
	bin := filepath.Join(dir, "sandbox.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	src.Close()
	dst.Close()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	// A writable mount for the disk limit, and a tree with a directory
	// only root can read.
	writable, tree := filepath.Join(dir, "writable"), filepath.Join(dir, "tree")
	if err := os.Mkdir(writable, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(tree, "hidden"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "hidden", "big"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(tree, "hidden"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{data, rootfs, writable} {
		if out, err := osexec.Command("chown", "-R", "65534:65534", p).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
	cmd := osexec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		bin, "-test.run=^TestHelperRootless$", "-test.v")
	cmd.Env = []string{rootlessEnv + "=" + data + "\n" + rootfs + "\n" + writable + "\n" + tree, "PATH=/usr/bin:/bin", "HOME=/"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rootless helper: %v\n%s", err, out)
	}
	want := "ISOLATED isolated network (use NetworkNone or NetworkHost): not supported when running as a non-root user\n" +
		"RESULT 0\n0 rootless  0 65534 1\nx\nro\nOVERLAY overlay root filesystem (use Spec.ReadOnly): not supported when running as a non-root user\n" +
		"CHECK missing: privileges, isolated network\nDISK exceeded true, exit 137\nUNREADABLE true\n"
	if !strings.Contains(string(out), want) {
		t.Errorf("rootless helper output:\n%s\nwant it to contain:\n%s", out, want)
	}
}
