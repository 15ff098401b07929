package sandbox

import (
	"io"
	"os"
	"runtime"
	"syscall"

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

// initArg is the argument libcontainer starts a container's init with (it
// re-executes the current binary as "<argv0> init"); initPipeEnv is set in
// that process only, so that a command named "init" of the binary is never
// taken for one.
const (
	initArg     = "init"
	initPipeEnv = "_LIBCONTAINER_INITPIPE"
)

// init does two things.
//
// The main goroutine keeps the main thread for the life of the process.
// libcontainer runs a helper goroutine, locked to its thread, that joins a
// container's mount namespace and exits without unlocking so that the
// runtime kills the thread. Go cannot kill the main thread: it would be
// wedged instead, leaving the process's main thread (what /proc/self shows)
// in the container's mount namespace and keeping that namespace, with its
// mounts, alive. A goroutine running on the main thread during package
// initialisation stays locked to it after this.
//
// And it turns a re-executed copy of the binary that was started in a new
// user namespace into the agent once its id maps are written
// (EnterUserNamespace): before any other work of the program.
//
// And it turns a re-executed copy of the binary into what it was started as
// (a container's init, the user-namespace holder, or CheckHost's limits
// probe inside a build container), which never returns.
// This happens here rather than from package main because Go runs package
// initialisers in a fixed order and only the ones ordered before this
// package have run yet: in the agent's binary a container init thereby skips
// the initialisers of the build, builder, poll and metrics packages and
// their dependencies (Prometheus among them), about 5 ms of every container
// start on a small VM (docs/benchmarks.md). Importing this package is all a
// binary (or a test binary) needs to start containers.
func init() {
	runtime.LockOSThread()
	if os.Getenv(usernsSyncEnv) != "" {
		waitForIDMaps() // never returns (see EnterUserNamespace)
	}
	if os.Getenv(usernsSetupEnv) != "" {
		rearmParentDeath()
	}
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case initArg:
		if os.Getenv(initPipeEnv) != "" {
			libcontainer.Init() // never returns
		}
	case usernsHolderArg:
		_, _ = io.Copy(io.Discard, os.Stdin)
		helperExit()
	case limitsProbeArg:
		limitsProbeMain() // never returns
	}
}

// helperExit ends a helper mode of the binary (the user namespace holder,
// the limits probe) with status 0. It has nothing to flush; and os.Exit(0)
// in a binary built with the race detector first sleeps a second (GORACE's
// atexit_sleep_ms), which every Manager's start and every limits check
// would wait for.
func helperExit() { syscall.Exit(0) }
