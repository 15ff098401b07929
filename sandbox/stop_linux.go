package sandbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// stop ends a running container: SIGTERM to every process, the grace
// period, then SIGKILL to every process (init's death in its own pid
// namespace takes all the others with it). It returns the init's status.
func (r *run) stop(p *libcontainer.Process, waitCh <-chan *os.ProcessState) *os.ProcessState {
	grace := r.spec.Grace
	if grace == 0 {
		grace = r.m.opts.grace
	}
	r.signalAll(p, unix.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case ps := <-waitCh:
		return ps
	case <-t.C:
	}
	if err := r.c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		r.log.WithError(err).Warn("killing container init")
	}
	r.signalAll(p, unix.SIGKILL)
	return <-waitCh
}

// kill ends a running container at once: SIGKILL to every process, no
// grace (a run over its disk limit would go on writing). It returns the
// init's status.
func (r *run) kill(p *libcontainer.Process, waitCh <-chan *os.ProcessState) *os.ProcessState {
	if err := r.c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		r.log.WithError(err).Warn("killing container init")
	}
	r.signalAll(p, unix.SIGKILL)
	return <-waitCh
}

// signalAll sends sig to every process of the container: the members of
// its cgroup, or, without one (rootless), of its pid namespace.
func (r *run) signalAll(p *libcontainer.Process, sig unix.Signal) {
	pids, err := r.c.Processes()
	if err != nil || len(pids) == 0 {
		pids = pidnsMembers(pidOf(p))
	}
	for _, pid := range pids {
		_ = unix.Kill(pid, sig)
	}
}

// pidnsMembers lists the host pids of the processes in init's pid
// namespace.
func pidnsMembers(init int) []int {
	if init <= 0 {
		return nil
	}
	ns, err := os.Readlink("/proc/" + strconv.Itoa(init) + "/ns/pid")
	if err != nil {
		return nil
	}
	// A reaped init's pid can be reused by any host process or thread (pid
	// numbers wrap at pid_max, 32768 on small machines): its namespace is
	// then the agent's own, whose members must never be signalled. The VM
	// harness caught this killing the agent's systemd unit.
	if self, err := os.Readlink("/proc/self/ns/pid"); err != nil || self == ns {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && l == ns {
			pids = append(pids, pid)
		}
	}
	return pids
}

// oomKilled tells whether the kernel's OOM killer killed a process of the
// container's memory cgroup.
func (r *run) oomKilled() bool {
	if r.c == nil {
		return false
	}
	st, err := r.c.State()
	if err != nil {
		return false
	}
	var file string
	if p, ok := st.CgroupPaths["memory"]; ok && p != "" {
		file = filepath.Join(p, "memory.oom_control") // cgroup v1
	} else if p, ok := st.CgroupPaths[""]; ok && p != "" {
		file = filepath.Join(p, "memory.events") // cgroup v2
	} else {
		return false
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if k, v, ok := strings.Cut(string(line), " "); ok && k == "oom_kill" {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n > 0
		}
	}
	return false
}
