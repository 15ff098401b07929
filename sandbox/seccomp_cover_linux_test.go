//go:build linux && cgo && seccomp

package sandbox

import (
	"slices"
	"testing"

	libseccomp "github.com/seccomp/libseccomp-golang"
)

// newerThanLibseccomp are names the lists carry that the libseccomp the
// Makefile links (Debian 12's 2.5.4) cannot resolve: the filter cannot
// name them, so they get the default ENOSYS until libseccomp learns them.
// A name here that libseccomp resolves is only logged (a newer
// libseccomp); a name elsewhere that it cannot resolve fails the test (a
// typo would silently refuse the call).
var newerThanLibseccomp = []string{
	"file_getattr", "file_setattr", "getxattrat", "listmount", "listxattrat", "lsm_get_self_attr",
	"lsm_list_modules", "lsm_set_self_attr", "mseal", "open_tree_attr", "removexattrat",
	"riscv_hwprobe", "setxattrat", "statmount", "uretprobe",
}

// coveredArchs are the architectures of the filters vagent builds (see
// seccompArchs) and the GOARCH whose lists apply to each.
var coveredArchs = map[string]string{"amd64": "amd64", "x86": "amd64", "arm64": "arm64", "arm": "arm64"}

// TestSeccompDecidesEverySyscall: every system call the linked libseccomp
// knows on the architectures of vagent's filters (on any host: libseccomp
// knows them all) is allowed, allowed with conditions, or refused on
// purpose. A newer libseccomp (or a change of the lists) that leaves one
// undecided fails here: decide it, in seccomp_syscalls.go, with its
// reason.
func TestSeccompDecidesEverySyscall(t *testing.T) {
	major, minor, micro := libseccomp.GetLibraryVersion()
	t.Logf("libseccomp %d.%d.%d", major, minor, micro)
	for _, a := range seccompArchs() {
		if _, ok := coveredArchs[a]; !ok {
			t.Errorf("the filter covers %s, which this test does not check", a)
		}
	}
	for a, goarch := range coveredArchs {
		decided := map[string]bool{"clone": true, "personality": true, "socket": true, "ptrace": true}
		for _, n := range allowedSyscalls(goarch) {
			decided[n] = true
		}
		for _, n := range slices.Concat(refusedEPERM, refusedENOSYS) {
			decided[n] = true
		}
		arch, err := libseccomp.GetArchFromString(a)
		if err != nil {
			t.Fatal(err)
		}
		known := 0
		for nr := range 4096 {
			name, err := libseccomp.ScmpSyscall(nr).GetNameByArch(arch)
			if err != nil {
				continue
			}
			known++
			if !decided[name] {
				t.Errorf("%s: %s (%d) is neither allowed nor refused", a, name, nr)
			}
		}
		if known < 250 {
			t.Errorf("%s: libseccomp names only %d system calls", a, known)
		}
	}
	for _, n := range slices.Concat(dockerAllowed, archAllowed["amd64"], archAllowed["arm64"], capAllowed, refusedEPERM, refusedENOSYS) {
		_, err := libseccomp.GetSyscallFromName(n)
		switch newer := slices.Contains(newerThanLibseccomp, n); {
		case err != nil && !newer:
			t.Errorf("libseccomp does not know %q: a typo, or add it to newerThanLibseccomp", n)
		case err == nil && newer:
			t.Logf("libseccomp knows %q now: the filter names it", n)
		}
	}
}
