package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/sandbox"
)

// checkHost probes the host; tests replace it.
var checkHost = sandbox.CheckHost

func newCheckCmd(env *cliEnv) *cobra.Command {
	var dataDir, configPath string
	var idBase, idSize uint
	var baseImages []string
	c := &cobra.Command{
		Use:   "check",
		Short: "report whether this host can run builds, and why not",
		Long: "Probe the host for what builds need (kernel, user namespaces, overlayfs, idmapped mounts,\n" +
			"cgroups and each configured limit, the isolated network (pasta, /dev/net/tun), seccomp, disk\n" +
			"space, private data-dir trees) by running what a build runs, and print one line per\n" +
			"requirement with what to do. With --config, also check what the\n" +
			"agent reaches: the server answers and accepts api_key, every registry mirror and origin\n" +
			"answers, which one serves each base image (--base-image, default " + defaultBaseImage + "), and\n" +
			"that the base images in the store use pacman_mirrors. It changes nothing: a data dir that\n" +
			"does not exist is probed where it will be created. Exit status 1 when anything is missing.",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if idBase > 1<<32-1 || idSize > 1<<32-1 {
				return usageError("id range out of bounds")
			}
			if len(baseImages) > 0 && configPath == "" {
				return usageError("--base-image needs --config (the registries to ask are the configuration's)")
			}
			var opts []sandbox.Option
			dir := dataDir
			var cfg *config.Config
			// The id range: the configuration's, else --id-base, else the
			// data dir's (recorded, or the one a build would pick).
			rcfg := &config.Config{IDRange: config.IDRange{Base: uint32(idBase), Size: uint32(idSize)}}
			if configPath != "" {
				var err error
				if cfg, err = loadAgentConfig(env, configPath, false); err != nil {
					return err
				}
				dir, opts = cfg.DataDir, sandboxOptions(cfg)
				rcfg.IDRange = cfg.IDRange
			}
			rcfg.IDRange.AllowConflicts = true // reported, not refused
			var ir idRangeChoice
			if !rootless() { // rootless, builds map to the user's subordinate ids
				var err error
				if ir, err = resolveIDRange(dir, rcfg, false, env.log); err != nil {
					return err
				}
				opts = append(opts, sandbox.WithIDMap(ir.Base, ir.Size))
			}
			reqs, err := checkHost(dir, opts...)
			if err != nil {
				return err
			}
			if cfg != nil && networkMode(cfg) != sandbox.NetworkIsolated {
				reqs = networkNotUsed(reqs, networkMode(cfg))
			}
			var lines []checkLine
			for _, r := range append(reqs, checkDataModes(dir)) {
				if r.Name == "id range" && ir.How != "" {
					r.Detail += " (" + ir.How + ")"
				}
				lines = append(lines, requirementLine(r))
			}
			if cfg != nil {
				if len(baseImages) == 0 {
					baseImages = []string{defaultBaseImage}
				}
				lines = append(lines, checkSetup(c.Context(), cfg, baseImages)...)
			}
			return reportCheck(env, lines, cfg != nil)
		},
	}
	fs := c.Flags()
	fs.StringVar(&configPath, "config", "", "agent configuration `FILE`: probe its data_dir, id_range and build_limits (the other flags are ignored then), "+
		"and check its server, api_key, registries and pacman_mirrors")
	dataDirVar(fs, &dataDir, defaultDataDir, "data directory for builds (a test overlay is mounted there)")
	fs.UintVar(&idBase, "id-base", 0, "first host id of the containers' id range (default: the data dir's, as builds use it)")
	fs.UintVar(&idSize, "id-size", 65536, "size of the containers' id range")
	fs.StringArrayVar(&baseImages, "base-image", nil, "with --config: check that the registries serve the base image `REF` (repeatable; default "+defaultBaseImage+")")
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

// The statuses of a check line.
const (
	statusOK      = "ok"
	statusMissing = "MISSING"
	statusSkipped = "skipped" // could not be checked; not a failure
)

// checkLine is one line of `vagent check`.
type checkLine struct {
	status, name, detail string
}

func requirementLine(r sandbox.Requirement) checkLine {
	if r.OK {
		return checkLine{status: statusOK, name: r.Name, detail: r.Detail}
	}
	return checkLine{status: statusMissing, name: r.Name, detail: r.Detail}
}

// privateTrees are the directories of the data directory that hold files
// owned by container ids or extracted from images (setuid binaries and
// file capabilities included): no host user but root (and, for
// sandbox/runs, the mapped root) may reach anything in them.
var privateTrees = []string{
	"images/rootfs", "images/tmp", "builders/b", "builders/tmp",
	"sandbox/m/*/runs", "sandbox/m/*/kept", "sandbox/runs", "sandbox/kept", // each process's; an older vagent's
	"build/runs", "pacman-cache",
}

// checkDataModes reports the private trees of dataDir that exist and that
// every host user can reach (each directory from / down to them has o+x).
func checkDataModes(dataDir string) sandbox.Requirement {
	var open []string
	for _, rel := range privateTrees {
		for _, p := range expandTree(dataDir, rel) {
			if _, err := os.Lstat(p); err == nil && reachableByAll(p) {
				open = append(open, p)
			}
		}
	}
	if _, err := os.Stat(dataDir); errors.Is(err, os.ErrNotExist) {
		return sandbox.Requirement{Name: "data dir modes", OK: true, Detail: dataDir + " does not exist yet: vagent run creates its trees private"}
	}
	if len(open) > 0 {
		return sandbox.Requirement{Name: "data dir modes", Detail: "reachable by every host user (make them 0700, or restart the agent, which does): " + strings.Join(open, ", ")}
	}
	return sandbox.Requirement{Name: "data dir modes", OK: true, Detail: "files of builds and images in " + dataDir + " are out of reach of host users"}
}

// expandTree returns the paths of dataDir that rel names: "*" stands for
// every entry of a directory (the data dir's own path is taken literally).
func expandTree(dataDir, rel string) []string {
	paths := []string{dataDir}
	for _, elem := range strings.Split(rel, "/") {
		var next []string
		for _, p := range paths {
			if elem != "*" {
				next = append(next, filepath.Join(p, elem))
				continue
			}
			ents, _ := os.ReadDir(p)
			for _, e := range ents {
				next = append(next, filepath.Join(p, e.Name()))
			}
		}
		paths = next
	}
	return paths
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

// reportCheck prints one line per check and fails, naming them, when any
// is missing.
func reportCheck(env *cliEnv, lines []checkLine, withConfig bool) error {
	var missing []string
	for _, l := range lines {
		if l.status == statusMissing {
			missing = append(missing, l.name)
		}
		fmt.Fprintf(env.stdout, "%-8s %-16s %s\n", l.status, l.name, l.detail)
	}
	if len(missing) > 0 {
		return &exitError{code: exitFailure, err: errors.New("cannot run builds, missing: " + strings.Join(slices.Compact(missing), ", "))}
	}
	if withConfig {
		fmt.Fprintln(env.stdout, "this host and configuration can run vagent builds")
	} else {
		fmt.Fprintln(env.stdout, "this host can run vagent builds")
	}
	return nil
}
