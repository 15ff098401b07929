package sandbox

import (
	"io"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's cgo constructor sets up namespaces before the Go runtime
	// starts in a container's init process.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	// Without the devices package the cgroup manager rejects device rules.
	_ "github.com/opencontainers/cgroups/devices"
)

// usernsHolderArg makes the re-executed binary sit in a fresh user namespace
// until its stdin closes: New uses it to get a user-namespace fd for
// idmapped mounts.
const usernsHolderArg = "vagent-sandbox-userns-holder"

var initCalled atomic.Bool

// The main goroutine keeps the main thread for the life of the process.
// libcontainer runs a helper goroutine, locked to its thread, that joins a
// container's mount namespace and exits without unlocking so that the
// runtime kills the thread. Go cannot kill the main thread: it would be
// wedged instead, leaving the process's main thread (what /proc/self shows)
// in the container's mount namespace and keeping that namespace, with its
// mounts, alive. A goroutine running on the main thread during package
// initialisation stays locked to it after this.
func init() { runtime.LockOSThread() }

// Init must be called first thing from an init function of package main
// (and from TestMain of tests that start containers). When the process is a
// re-executed container init or helper it does that job and never returns;
// otherwise it returns at once.
func Init() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "init":
			libcontainer.Init() // never returns
		case usernsHolderArg:
			_, _ = io.Copy(io.Discard, os.Stdin)
			os.Exit(0)
		}
	}
	initCalled.Store(true)
}
