package sandbox

import (
	"os/exec"
	"runtime"
	"sync"
)

// spawner is a goroutine locked to a thread that never exits. The kernel
// ties a child's parent-death signal to the thread that forked it, and Go
// ends the threads a goroutine leaves locked (libcontainer does, and
// onNewThread when it cannot restore one): a child with a parent-death
// signal (pasta, the user-namespace helper) started from an arbitrary
// goroutine could get it while the agent lives.
var spawner struct {
	once sync.Once
	reqs chan func()
}

// startLongLived starts cmd from the spawner's thread.
func startLongLived(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan func())
		go func() {
			runtime.LockOSThread()
			for f := range spawner.reqs {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawner.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}
