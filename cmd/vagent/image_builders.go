package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/sandbox"
)

func newBuilderCmd(env *cliEnv) *cobra.Command {
	return newGroup("builder", "prepare, list and remove builder images (build, ls, rm, prune)",
		"A builder is BASE plus pacman -Syu --needed --noconfirm base-devel git (builder_packages),\n"+
			"a builder user (1000:1000) with password-less sudo and /build. Builders are an OCI\n"+
			"image layout in DATA_DIR/builders/oci, tagged with the base reference (':' and '@' as\n"+
			"'-'): skopeo, umoci and crane read it.\n\n"+
			"With --config agent.yaml, the commands use the agent's data_dir, registries,\n"+
			"builder_packages, pacman_mirrors, pacman_repos, image_rebuild_frequency and sandbox\n"+
			"settings; flags given on the command line win.",
		newBuilderBuildCmd(env), newBuilderListCmd(env), newBuilderRemoveCmd(env), newBuilderPruneCmd(env))
}

// agentFlags are --config and --data-dir of the commands that can follow
// an agent's configuration.
type agentFlags struct {
	storeFlags
	config string
	cfg    *Config // loaded by load
}

func (f *agentFlags) register(c *cobra.Command, what string) {
	f.storeFlags.register(c.Flags())
	c.Flags().StringVar(&f.config, "config", "", "use the agent configuration `FILE` (agent.yaml): "+what)
}

// load reads --config, if given; its data_dir applies unless --data-dir
// was given. An invalid configuration exits with status 78.
func (f *agentFlags) load(env *cliEnv, c *cobra.Command) error {
	if f.config == "" {
		return nil
	}
	cfg, err := loadAgentConfig(env, f.config, false)
	if err != nil {
		return err
	}
	f.cfg = cfg
	if !c.Flags().Changed("data-dir") {
		f.dataDir = cfg.DataDir
	}
	return nil
}

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
func loadAgentConfig(env *cliEnv, path string, needServer bool) (*Config, error) {
	cfg, err := LoadConfig(path, os.Getenv)
	if missing := missingServerKeys(err); err != nil && !needServer && len(missing) > 0 {
		placeholder := map[string]string{"VIETER_ADDRESS": placeholderAddress, "VIETER_API_KEY": placeholderKey}
		cfg, err = LoadConfig(path, func(k string) string {
			if v, ok := placeholder[k]; ok && missing[k] {
				return v
			}
			return os.Getenv(k)
		})
	}
	if err = errors.Join(err, checkEnviron(os.Environ())); err != nil {
		return nil, &exitError{code: exitConfig, err: err}
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
		var ce *configError
		if errors.As(e, &ce) && (ce.key == "address" || ce.key == "api_key") && strings.HasPrefix(ce.msg, "required") {
			missing[envName(ce.key)] = true
		}
	}
	return missing
}

// minAPIKeyLen is the shortest API key accepted without a warning.
const minAPIKeyLen = 16

// builderOptions are the builder options of the configuration, if any.
func (f *agentFlags) builderOptions(env *cliEnv) []builder.Option {
	bopts := []builder.Option{builder.WithLogger(env.log)}
	if f.cfg != nil {
		bopts = append(bopts, f.cfg.BuilderOptions()...)
	}
	return bopts
}

// ociOptions are the registry options of the configuration, if any, then
// those of the flags.
func (f *agentFlags) ociOptions(env *cliEnv, rf *registryFlags) ([]oci.Option, error) {
	var opts []oci.Option
	if f.cfg != nil {
		o, err := f.cfg.OCIOptions()
		if err != nil {
			return nil, err
		}
		opts = o
	}
	o, err := rf.options(env)
	if err != nil {
		return nil, err
	}
	return append(opts, o...), nil
}

func newBuilderBuildCmd(env *cliEnv) *cobra.Command {
	var af agentFlags
	var rf registryFlags
	var force, seccomp bool
	c := &cobra.Command{
		Use:   "build [flags] BASE",
		Short: "prepare (or refresh) the builder of base image BASE now, showing the setup output",
		Args:  exactArgs(1, "one base image reference"),
		RunE: func(c *cobra.Command, args []string) error {
			base := args[0]
			if err := af.load(env, c); err != nil {
				return err
			}
			ropts, err := af.ociOptions(env, &rf)
			if err != nil {
				return err
			}
			popts, err := preflightOptions(env.log, af.dataDir, af.cfg)
			if err != nil {
				return err
			}
			mode := sandbox.NetworkIsolated // the setup's, as the agent's builders have it
			if af.cfg != nil {
				mode = af.cfg.setupNetwork()
			}
			if err := preflight(af.dataDir, popts, buildNeeds(mode, seccomp, "the builder setup runs isolated; build_network.mode: host in --config runs it unisolated")); err != nil {
				return err
			}
			store, err := af.open(env, ropts...)
			if err != nil {
				return err
			}
			sb, _, err := openSandbox(env.log, af.dataDir, af.cfg, seccomp)
			if err != nil {
				return err
			}
			defer sb.Close()
			m, err := builder.New(store, sb, filepath.Join(af.dataDir, "builders"), af.builderOptions(env)...)
			if err != nil {
				return err
			}
			defer m.Close()
			var info builder.Info
			rebuilt := true
			if force {
				info, err = m.Prepare(c.Context(), base, env.stdout)
			} else {
				info, rebuilt, err = m.Refresh(c.Context(), base, env.stdout)
			}
			if err != nil {
				return explain(err, af.dataDir)
			}
			state := "prepared"
			if !rebuilt {
				state = "up to date"
			}
			fmt.Fprintf(env.stdout, "builder %s for %s %s (oci:%s:%s)\n", info.Digest, info.Base, state, m.LayoutDir(), builder.LayoutTag(info.Base))
			return nil
		},
	}
	af.register(c, "its data_dir, registries, builder_packages, pacman_mirrors, pacman_repos, image_rebuild_frequency and sandbox settings")
	rf.register(c.Flags())
	c.Flags().BoolVar(&force, "force", false, "prepare a new builder even if the current one is fresh and its base unchanged")
	c.Flags().BoolVar(&seccomp, "seccomp", true, "filter the setup's system calls (false for a binary built without seccomp support)")
	return c
}

// openBuilders opens the builder directory of dataDir for listing and
// removing: nil when there is none, or (for listing) when it is not
// complete, since opening it would complete it. It never creates the
// data dir.
func openBuilders(dataDir string, opts []builder.Option, readOnly bool) (*builder.Manager, error) {
	if err := requireDataDir(dataDir); err != nil {
		return nil, err
	}
	dir := filepath.Join(dataDir, "builders")
	probe := dir
	if readOnly {
		probe = filepath.Join(dir, "oci", "index.json")
	}
	if _, err := os.Stat(probe); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return builder.New(nil, nil, dir, opts...)
}

func newBuilderListCmd(env *cliEnv) *cobra.Command {
	var af agentFlags
	c := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"list"},
		Short:   "list the builders: base, digest, age, size, state",
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := af.load(env, c); err != nil {
				return err
			}
			return listBuilders(env, af.dataDir, af.builderOptions(env))
		},
	}
	af.register(c, "its data_dir and image_rebuild_frequency (what is stale)")
	return c
}

// listBuilders prints the builder table of dataDir.
func listBuilders(env *cliEnv, dataDir string, bopts []builder.Option) error {
	m, err := openBuilders(dataDir, bopts, true)
	if err != nil {
		return err
	}
	var infos []builder.Info
	if m != nil {
		defer m.Close()
		if infos, err = m.List(); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BASE\tBUILDER\tBASE DIGEST\tAGE\tSIZE\tSTATE")
	for _, in := range infos {
		var state []string
		if in.Current {
			state = append(state, "current")
		} else {
			state = append(state, "superseded")
		}
		if in.OtherSettings {
			state = append(state, "other settings")
		}
		if in.Stale {
			state = append(state, "stale")
		}
		if in.InUse {
			state = append(state, "in use")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", in.Base, shortHex(in.Digest.Hex), shortHex(in.BaseDigest.Hex),
			time.Since(in.Created).Round(time.Minute), humanBytes(in.Size), joinComma(state))
	}
	return tw.Flush()
}

func newBuilderRemoveCmd(env *cliEnv) *cobra.Command {
	var af agentFlags
	c := &cobra.Command{
		Use:     "rm [flags] BASE...",
		Aliases: []string{"remove"},
		Short:   "remove the builders of base images BASE (as builder ls shows them), unless in use",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError("builder rm takes at least one base image reference")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if err := af.load(env, c); err != nil {
				return err
			}
			m, err := openBuilders(af.dataDir, af.builderOptions(env), false)
			if err != nil {
				return err
			}
			if m != nil {
				defer m.Close()
			}
			var errs []error
			for _, base := range args {
				var rep builder.RemoveReport
				if m != nil {
					if rep, err = m.Remove(c.Context(), base); err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", base, err))
						continue
					}
				}
				switch {
				case rep.Builders == 0 && rep.InUse == 0:
					errs = append(errs, fmt.Errorf("no builder of %s (vagent builder ls lists them)", base))
				case rep.InUse > 0:
					errs = append(errs, fmt.Errorf("%s: %d builder(s) in use kept (removed %d)", base, rep.InUse, rep.Builders))
				default:
					fmt.Fprintf(env.stdout, "removed %d builder(s) of %s, %d blobs (%s)\n", rep.Builders, base, rep.Blobs, humanBytes(rep.Bytes))
				}
			}
			return errors.Join(errs...)
		},
	}
	af.register(c, "its data_dir")
	return c
}

func newBuilderPruneCmd(env *cliEnv) *cobra.Command {
	var af agentFlags
	c := &cobra.Command{
		Use:   "prune [flags]",
		Short: "remove builders that are superseded or stale (unless in use), and image blobs no builder uses",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := af.load(env, c); err != nil {
				return err
			}
			m, err := openBuilders(af.dataDir, af.builderOptions(env), false)
			if err != nil {
				return err
			}
			var rep builder.PruneReport
			if m != nil {
				defer m.Close()
				if rep, err = m.Prune(c.Context()); err != nil {
					return err
				}
			}
			fmt.Fprintf(env.stdout, "removed %d builders (%d in use kept), %d blobs (%s)\n", rep.Builders, rep.InUse, rep.Blobs, humanBytes(rep.Bytes))
			return nil
		},
	}
	af.register(c, "its data_dir and image_rebuild_frequency (what is stale)")
	return c
}

func shortHex(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}
