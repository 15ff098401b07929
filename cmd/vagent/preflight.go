package main

import (
	"fmt"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/sandbox"
)

// exitUnavailable is the exit status of `vagent run`, `vagent build` and
// `vagent builder build` on a host that cannot run builds (EX_UNAVAILABLE),
// and, for an ordinary user, of every command that needs rootless mode
// where it is not available (enterUserNamespace).
const exitUnavailable = 69

// notPreflighted are requirements of vagent check that do not stop a
// command: the id range's conflicts are resolveIDRange's policy
// (id_range.allow_conflicts).
var notPreflighted = map[string]bool{"id range": true}

// needs says which optional requirements of `vagent check` a command's
// builds have.
type needs struct {
	// seccomp: false for vagent build --seccomp=false.
	seccomp bool
	// isolatedNetwork: builds or builder setups run in the isolated
	// network (build_network.mode or --network other than host).
	isolatedNetwork bool
	// networkHint tells which setting asks for the isolated network.
	networkHint string
}

// optional maps the optional requirements to whether n needs them.
func (n needs) optional() map[string]bool {
	return map[string]bool{"seccomp": n.seccomp, "isolated network": n.isolatedNetwork}
}

// buildNeeds are the needs of builds with network mode (and seccomp);
// hint names the setting that chose the mode.
func buildNeeds(mode sandbox.NetworkMode, seccomp bool, hint string) needs {
	return needs{seccomp: seccomp, isolatedNetwork: mode != sandbox.NetworkHost, networkHint: hint}
}

// Where the isolated network comes from, for preflight's message.
const (
	networkHintConfig = "build_network.mode isolated needs it; build_network.mode: host runs builds unisolated"
	networkHintBuild  = "--network isolated (the default) needs it; --network host runs the build unisolated"
)

// preflight runs the probes of `vagent check` — privileges, user
// namespaces, the id range's user namespace, overlayfs over an idmapped
// lower, cgroups and a build container with the configured limits, the
// isolated network, seccomp, disk space — and refuses with
// exitUnavailable when one is missing: a `vagent run` that cannot build
// takes no job off the server, a `vagent build` pulls nothing. Every
// requirement sandbox.CheckHost reports is a reason to refuse but
// notPreflighted and the optional ones the builds do not need (n): a
// requirement added there refuses here too.
//
// opts are the sandbox options builds will use (id range, limits).
func preflight(dataDir string, opts []sandbox.Option, n needs) error {
	reqs, err := checkHost(dataDir, opts...)
	if err != nil {
		return fmt.Errorf("checking the host: %w", err)
	}
	optional := n.optional()
	var missing []string
	for _, r := range reqs {
		if need, isOptional := optional[r.Name]; r.OK || notPreflighted[r.Name] || (isOptional && !need) {
			continue
		}
		line := r.Name + ": " + r.Detail
		if r.Name == "isolated network" && n.networkHint != "" {
			line += " (" + n.networkHint + ")"
		}
		missing = append(missing, line)
	}
	if len(missing) == 0 {
		return nil
	}
	return &exitError{code: exitUnavailable, err: fmt.Errorf("this host cannot run builds (see vagent check):\n  %s", strings.Join(missing, "\n  "))}
}

// preflightOptions are the sandbox options preflight probes with: the data
// dir's id range (as root; resolved and recorded as the builds will have
// it; rootless, none: the user's subordinate ids) and the configuration's
// limits.
func preflightOptions(log logrus.FieldLogger, dataDir string, cfg *config.Config) ([]sandbox.Option, error) {
	opts := []sandbox.Option{sandbox.WithLogger(log)}
	if cfg != nil {
		opts = append(opts, sandboxOptions(cfg)...)
	}
	if rootless() { // the user's subordinate ids, not the data dir's range
		return opts, nil
	}
	ir, err := resolveIDRange(dataDir, cfg, true, log)
	if err != nil {
		return nil, err
	}
	return append(opts, sandbox.WithIDMap(ir.Base, ir.Size)), nil
}
