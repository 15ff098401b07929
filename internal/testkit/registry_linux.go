package testkit

import (
	"os/exec"
	"syscall"
)

var terminateSignal = syscall.SIGTERM

// setRegistrySysProcAttr makes the kernel kill the registry if the test
// process dies without running its cleanups (a crash or a timeout panic).
func setRegistrySysProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
