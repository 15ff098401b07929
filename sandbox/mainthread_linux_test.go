package sandbox_test

import (
	"os"
	"testing"

	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestMainThreadStaysInHostMountNamespace guards against libcontainer's
// mount-source thread wedging the main thread in a container's mount
// namespace (see init_linux.go).
func TestMainThreadStaysInHostMountNamespace(t *testing.T) {
	e := newManager(t)
	rootfs := sandboxtest.BusyboxRootfs(t)
	want, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		sh(t, e.m, rootfs, "true")
	}
	if got, _ := os.Readlink("/proc/self/ns/mnt"); got != want {
		t.Errorf("main thread moved from mount namespace %s to %s", want, got)
	}
}
