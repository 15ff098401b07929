package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vieter-v/vagent/internal/config"
)

// The command side of agent.yaml (package config has the file itself):
// how the commands load it, and the checks that need the host.

// loadAgentConfig loads the agent configuration of a command's --config
// (or `vagent run`'s argument; "" for VIETER_* variables alone). An
// invalid configuration exits with status 78 (exitConfig) in every
// command.
// Unknown VIETER_* variables are configuration errors too. A short API
// key is warned about.
//
// Only `vagent run` talks to the server: the other commands accept a
// configuration without address and api_key (a packager's copy of the
// agent's file, or one whose key comes from VIETER_API_KEY_FILE under the
// service only).
func loadAgentConfig(env *cliEnv, path string, needServer bool) (*config.Config, error) {
	cfg, err := config.Load(path, os.Getenv)
	if missing := missingServerKeys(err); err != nil && !needServer && len(missing) > 0 {
		placeholder := map[string]string{"VIETER_ADDRESS": placeholderAddress, "VIETER_API_KEY": placeholderKey}
		cfg, err = config.Load(path, func(k string) string {
			if v, ok := placeholder[k]; ok && missing[k] {
				return v
			}
			return os.Getenv(k)
		})
	}
	if err = errors.Join(err, config.CheckEnviron(os.Environ())); err != nil {
		return nil, &exitError{code: exitConfig, err: err}
	}
	if !cfg.DataDirSet {
		cfg.DataDir = defaultDataDir // an ordinary user's is not root's
	}
	if len(cfg.Mirrors) > 0 {
		env.log.Warn("configuration key mirrors (VIETER_MIRRORS) is deprecated: it is pacman_mirrors (VIETER_PACMAN_MIRRORS); registry mirrors are registries.mirrors")
	}
	if n := len(cfg.APIKey.Reveal()); n < minAPIKeyLen {
		env.log.Warnf("api_key has %d characters: a key shorter than %d is easy to guess, and its redaction in logs may hide ordinary text", n, minAPIKeyLen)
	}
	return cfg, nil
}

// The address and api_key of a configuration loaded without them.
const (
	placeholderAddress = "http://server.invalid"
	placeholderKey     = "unused-by-this-command"
)

// missingServerKeys returns the variables of the server's keys (address,
// api_key) that err reports as required.
func missingServerKeys(err error) map[string]bool {
	missing := map[string]bool{}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var ce *config.Error
		if errors.As(e, &ce) && (ce.Key == "address" || ce.Key == "api_key") && strings.HasPrefix(ce.Msg, "required") {
			missing[config.EnvName(ce.Key)] = true
		}
	}
	return missing
}

// minAPIKeyLen is the shortest API key accepted without a warning.
const minAPIKeyLen = 16

// checkIDRange refuses an id range that host users, groups or subordinate
// id entries use (conflicts, from sandbox.IDConflicts) unless
// id_range.allow_conflicts is set.
func checkIDRange(c *config.Config, conflicts []string) error {
	if len(conflicts) == 0 || c.IDRange.AllowConflicts {
		return nil
	}
	end := uint64(c.IDRange.Base) + uint64(c.IDRange.Size) - 1
	return &config.Error{Where: "id_range", Msg: fmt.Sprintf("host ids %d-%d are in use: %s; remove id_range.base to let vagent pick a free range, "+
		"choose another, or set id_range.allow_conflicts: true to accept it",
		c.IDRange.Base, end, strings.Join(conflicts, ", "))}
}
