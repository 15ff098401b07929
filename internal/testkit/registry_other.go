//go:build !linux

package testkit

import (
	"os"
	"os/exec"
)

var terminateSignal = os.Kill

func setRegistrySysProcAttr(*exec.Cmd) {}

func startProcess(cmd *exec.Cmd) error { return cmd.Start() }
