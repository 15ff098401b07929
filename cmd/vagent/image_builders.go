package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/sandbox"
)

func init() {
	register(&command{name: "builder", summary: "prepare, list and prune builder images (build, ls, prune)", run: runBuilder})
}

const builderUsage = `usage: vagent builder <command> [flags] [arguments]

commands:
  build BASE   prepare (or refresh) the builder of base image BASE now,
               showing the setup output
  ls           list the builders: base, digest, age, size, state
  prune        remove builders that are superseded or stale (unless in
               use), and image blobs no builder uses

A builder is BASE plus pacman -Syu --needed --noconfirm base-devel git, a
builder user (1000:1000) with password-less sudo and /build. Builders are
an OCI image layout in DATA_DIR/builders/oci, tagged with the base
reference (':' and '@' as '-'): skopeo, umoci and crane read it.
Run 'vagent builder <command> -h' for its flags.
`

func runBuilder(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(env.stderr, builderUsage)
		return &exitError{code: 2}
	}
	switch args[0] {
	case "build":
		return runBuilderBuild(ctx, env, args[1:])
	case "ls", "list":
		return runBuilderList(ctx, env, args[1:])
	case "prune":
		return runBuilderPrune(ctx, env, args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(env.stdout, builderUsage)
		return nil
	}
	fmt.Fprint(env.stderr, builderUsage)
	return usageError("unknown builder command %q", args[0])
}

// builderOptions reads the builder settings of a configuration file, if
// one is given.
func builderOptions(env *cliEnv, configPath string) ([]builder.Option, []sandbox.Option, error) {
	bopts := []builder.Option{builder.WithLogger(env.log)}
	if configPath == "" {
		return bopts, nil, nil
	}
	c, err := LoadConfig(configPath, os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	return append(bopts, c.BuilderOptions()...), c.SandboxOptions(), nil
}

func runBuilderBuild(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "builder build", "builder build [flags] BASE")
	var sf storeFlags
	var rf registryFlags
	sf.register(fs)
	rf.register(fs)
	config := fs.String("config", "", "read builder_packages, mirrors, pacman_repos, image_rebuild_frequency and the sandbox settings from this agent configuration `FILE`")
	force := fs.Bool("force", false, "prepare a new builder even if the current one is fresh and its base unchanged")
	seccomp := fs.Bool("seccomp", true, "filter the setup's system calls (false for a binary built without seccomp support)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("builder build takes one base image reference")
	}
	base := fs.Arg(0)
	bopts, sopts, err := builderOptions(env, *config)
	if err != nil {
		return err
	}
	ropts, err := rf.options()
	if err != nil {
		return err
	}
	store, err := sf.open(env, ropts...)
	if err != nil {
		return err
	}
	sopts = append([]sandbox.Option{sandbox.WithLogger(env.log), sandbox.WithSeccomp(*seccomp)}, sopts...)
	sb, err := sandbox.New(filepath.Join(sf.dataDir, "sandbox"), sopts...)
	if errors.Is(err, sandbox.ErrLocked) {
		return fmt.Errorf("sandbox: %w (stop the agent, or let it refresh its builders itself)", err)
	}
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	defer sb.Close()
	m, err := builder.New(store, sb, filepath.Join(sf.dataDir, "builders"), bopts...)
	if err != nil {
		return err
	}
	defer m.Close()
	var info builder.Info
	rebuilt := true
	if *force {
		info, err = m.Build(ctx, base, env.stdout)
	} else {
		info, rebuilt, err = m.Refresh(ctx, base, env.stdout)
	}
	if err != nil {
		return explain(err, sf.dataDir)
	}
	state := "prepared"
	if !rebuilt {
		state = "up to date"
	}
	fmt.Fprintf(env.stdout, "builder %s for %s %s (oci:%s:%s)\n", info.Digest, info.Base, state, m.LayoutDir(), builder.LayoutTag(info.Base))
	return nil
}

// openBuilders opens the builder directory of dataDir for listing and
// pruning (nil when there is none).
func openBuilders(dataDir string, opts []builder.Option) (*builder.Manager, error) {
	dir := filepath.Join(dataDir, "builders")
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return builder.New(nil, nil, dir, opts...)
}

func runBuilderList(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "builder ls", "builder ls [flags]")
	var sf storeFlags
	sf.register(fs)
	config := fs.String("config", "", "take image_rebuild_frequency (what is stale) from this agent configuration `FILE`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("builder ls takes no arguments")
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BASE\tBUILDER\tBASE DIGEST\tAGE\tSIZE\tSTATE")
	bopts, _, err := builderOptions(env, *config)
	if err != nil {
		return err
	}
	m, err := openBuilders(sf.dataDir, bopts)
	if err != nil {
		return err
	}
	if m == nil {
		return tw.Flush()
	}
	defer m.Close()
	infos, err := m.List()
	if err != nil {
		return err
	}
	for _, in := range infos {
		var state []string
		if in.Current {
			state = append(state, "current")
		} else {
			state = append(state, "superseded")
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

func runBuilderPrune(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "builder prune", "builder prune [flags]")
	var sf storeFlags
	sf.register(fs)
	config := fs.String("config", "", "take image_rebuild_frequency (what is stale) from this agent configuration `FILE`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError("builder prune takes no arguments")
	}
	bopts, _, err := builderOptions(env, *config)
	if err != nil {
		return err
	}
	m, err := openBuilders(sf.dataDir, bopts)
	if err != nil {
		return err
	}
	var rep builder.PruneReport
	if m != nil {
		defer m.Close()
		if rep, err = m.Prune(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(env.stdout, "removed %d builders (%d in use kept), %d blobs (%s)\n", rep.Builders, rep.InUse, rep.Blobs, humanBytes(rep.Bytes))
	return nil
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
