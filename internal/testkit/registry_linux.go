package testkit

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

var terminateSignal = syscall.SIGTERM

// setRegistrySysProcAttr makes the kernel kill the registry if the test
// process dies without running its cleanups (a crash or a timeout panic).
func setRegistrySysProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// The parent-death signal fires when the *thread* that started the child
// exits, not the process. Go retires threads that were locked when their
// goroutine ended, and libcontainer (the sandbox) does that on purpose, so
// a registry started from an arbitrary goroutine could be killed in the
// middle of a test. Registries are therefore started from one thread that
// stays locked, and alive, as long as the process.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// startProcess starts cmd from the process's stable spawner thread.
func startProcess(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}
