package sandbox

import (
	"fmt"
	"runtime"

	"github.com/opencontainers/runc/libcontainer/configs"
)

// SeccompOCI is the filter of every run in the form of the OCI runtime
// spec's linux.seccomp, for `runc run` in BenchmarkStartTrue: the same
// filter under runc, a like-for-like start.
func SeccompOCI() (map[string]any, error) {
	p := seccompProfile()
	archs := map[string]string{"amd64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "arm64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM"}
	ops := map[configs.Operator]string{configs.EqualTo: "SCMP_CMP_EQ", configs.LessThan: "SCMP_CMP_LT", configs.GreaterThan: "SCMP_CMP_GT", configs.MaskEqualTo: "SCMP_CMP_MASKED_EQ"}
	action := func(a configs.Action) (string, error) {
		switch a {
		case configs.Allow:
			return "SCMP_ACT_ALLOW", nil
		case configs.Errno:
			return "SCMP_ACT_ERRNO", nil
		}
		return "", fmt.Errorf("action %v", a)
	}
	def, err := action(p.DefaultAction)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"defaultAction": def, "defaultErrnoRet": *p.DefaultErrnoRet}
	var as []string
	for _, a := range p.Architectures {
		if archs[a] == "" {
			return nil, fmt.Errorf("architecture %s on %s", a, runtime.GOARCH)
		}
		as = append(as, archs[a])
	}
	out["architectures"] = as
	var calls []map[string]any
	for _, s := range p.Syscalls {
		act, err := action(s.Action)
		if err != nil {
			return nil, err
		}
		c := map[string]any{"names": []string{s.Name}, "action": act}
		if s.ErrnoRet != nil {
			c["errnoRet"] = *s.ErrnoRet
		}
		var args []map[string]any
		for _, a := range s.Args {
			if ops[a.Op] == "" {
				return nil, fmt.Errorf("operator %v", a.Op)
			}
			args = append(args, map[string]any{"index": a.Index, "value": a.Value, "valueTwo": a.ValueTwo, "op": ops[a.Op]})
		}
		if args != nil {
			c["args"] = args
		}
		calls = append(calls, c)
	}
	out["syscalls"] = calls
	return out, nil
}

// InstanceDir returns the Manager's own directory in its data directory.
func (m *Manager) InstanceDir() string { return m.instDir }
