package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/sandbox"
)

func init() { register(newCheckCmd) }

// checkHost probes the host; tests replace it.
var checkHost = sandbox.CheckHost

func newCheckCmd(env *cliEnv) *cobra.Command {
	var dataDir, config string
	var idBase, idSize uint
	c := &cobra.Command{
		Use:   "check",
		Short: "report whether this host can run builds, and why not",
		Long: "Probe the host for what builds need (kernel, user namespaces, overlayfs, idmapped mounts,\n" +
			"cgroups and each configured limit, the isolated network (pasta, /dev/net/tun), seccomp, disk\n" +
			"space, private data-dir trees) by running what a build runs, and print one line per\n" +
			"requirement with what to do. Exit status 1 when one is missing.",
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			if idBase > 1<<32-1 || idSize > 1<<32-1 {
				return usageError("id range out of bounds")
			}
			opts := []sandbox.Option{sandbox.WithIDMap(uint32(idBase), uint32(idSize))}
			dir := dataDir
			var cfg *Config
			if config != "" {
				var err error
				if cfg, err = loadAgentConfig(env, config, false); err != nil {
					return err
				}
				dir, opts = cfg.DataDir, cfg.SandboxOptions()
			}
			reqs, err := checkHost(dir, opts...)
			if err != nil {
				return err
			}
			if cfg != nil && cfg.NetworkMode() != sandbox.NetworkIsolated {
				reqs = networkNotUsed(reqs, cfg.NetworkMode())
			}
			return reportCheck(env, append(reqs, checkDataModes(dir)))
		},
	}
	fs := c.Flags()
	fs.StringVar(&config, "config", "", "agent configuration `FILE`: probe its data_dir, id_range and build_limits (the other flags are ignored then)")
	fs.StringVar(&dataDir, "data-dir", defaultDataDir, "data directory for builds (a test overlay is mounted there)")
	fs.UintVar(&idBase, "id-base", 100000, "first host id of the containers' id range")
	fs.UintVar(&idSize, "id-size", 65536, "size of the containers' id range")
	return c
}

// networkNotUsed marks the isolated network requirement as met for an
// agent whose builds do not use it (build_network.mode host or none).
func networkNotUsed(reqs []sandbox.Requirement, mode sandbox.NetworkMode) []sandbox.Requirement {
	for i, r := range reqs {
		if r.Name == "isolated network" && !r.OK {
			reqs[i] = sandbox.Requirement{Name: r.Name, OK: true, Detail: fmt.Sprintf("not used (build_network.mode: %s): %s", mode, r.Detail)}
		}
	}
	return reqs
}

// privateTrees are the directories of the data directory that hold files
// owned by container ids or extracted from images (setuid binaries and
// file capabilities included): no host user but root (and, for
// sandbox/runs, the mapped root) may reach anything in them.
var privateTrees = []string{
	"images/rootfs", "images/tmp", "builders/b", "builders/tmp",
	"sandbox/runs", "sandbox/kept", "build/runs", "pacman-cache",
}

// checkDataModes reports the private trees of dataDir that exist and that
// every host user can reach (each directory from / down to them has o+x).
func checkDataModes(dataDir string) sandbox.Requirement {
	var open []string
	for _, rel := range privateTrees {
		p := filepath.Join(dataDir, rel)
		if _, err := os.Lstat(p); err == nil && reachableByAll(p) {
			open = append(open, p)
		}
	}
	if len(open) > 0 {
		return sandbox.Requirement{Name: "data dir modes", Detail: "reachable by every host user (make them 0700, or restart the agent, which does): " + strings.Join(open, ", ")}
	}
	return sandbox.Requirement{Name: "data dir modes", OK: true, Detail: "files of builds and images in " + dataDir + " are out of reach of host users"}
}

// reachableByAll tells whether others may search every directory from /
// to p, p included.
func reachableByAll(p string) bool {
	for q := p; ; q = filepath.Dir(q) {
		fi, err := os.Stat(q)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if q == "/" || q == "." {
			return true
		}
	}
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
