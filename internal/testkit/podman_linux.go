package testkit

import (
	"fmt"
	"syscall"
)

// PodmanRunLimits are `podman run` flags for the benchmarks that compare
// with podman: the container's open-file limit is this process's own, and
// its process limit 4096. With podman's defaults runc fails on hosts where
// root lacks CAP_SYS_RESOURCE (as on the development VM): "error setting
// rlimits for ready process ... operation not permitted", since podman asks
// for 1048576 files and lowers its own process limit (to 32768 there)
// below what it then asks for the container.
func PodmanRunLimits() []string {
	nofile := uint64(1024)
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err == nil {
		nofile = r.Cur
	}
	return []string{"--ulimit", fmt.Sprintf("nofile=%d:%d", nofile, nofile), "--ulimit", "nproc=4096:4096"}
}
