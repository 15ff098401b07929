package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/sandbox"
)

func init() { register(newCheckCmd) }

// checkHost probes the host; tests replace it.
var checkHost = sandbox.CheckHost

func newCheckCmd(env *cliEnv) *cobra.Command {
	var dataDir string
	var idBase, idSize uint
	c := &cobra.Command{
		Use:   "check",
		Short: "report whether this host can run builds, and why not",
		Long: "Probe the host for what builds need (kernel, user namespaces, overlayfs, idmapped mounts,\n" +
			"cgroups, seccomp, disk space) and print one line per requirement. Exit status 1 when one\n" +
			"is missing.",
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			if idBase > 1<<32-1 || idSize > 1<<32-1 {
				return usageError("id range out of bounds")
			}
			reqs, err := checkHost(dataDir, sandbox.WithIDMap(uint32(idBase), uint32(idSize)))
			if err != nil {
				return err
			}
			return reportCheck(env, reqs)
		},
	}
	fs := c.Flags()
	fs.StringVar(&dataDir, "data-dir", defaultDataDir, "data directory for builds (a test overlay is mounted there)")
	fs.UintVar(&idBase, "id-base", 100000, "first host id of the containers' id range")
	fs.UintVar(&idSize, "id-size", 65536, "size of the containers' id range")
	return c
}

// reportCheck prints one line per requirement and fails, naming them, when
// any is missing.
func reportCheck(env *cliEnv, reqs []sandbox.Requirement) error {
	var missing []string
	for _, r := range reqs {
		status := "ok"
		if !r.OK {
			status = "MISSING"
			missing = append(missing, r.Name)
		}
		fmt.Fprintf(env.stdout, "%-8s %-16s %s\n", status, r.Name, r.Detail)
	}
	if len(missing) > 0 {
		return &exitError{code: exitFailure, err: errors.New("host cannot run builds, missing: " + strings.Join(missing, ", "))}
	}
	fmt.Fprintln(env.stdout, "this host can run vagent builds")
	return nil
}
