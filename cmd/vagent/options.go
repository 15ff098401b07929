package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/vieter"
)

// The options of other packages that a configuration makes: the one place
// where agent.yaml (package config, which imports none of them) meets
// poll, vieter, oci, sandbox, job and builder.

// pollOptions returns the poll options of the configuration (without the
// logger and the observer, which the caller adds).
func pollOptions(cfg *config.Config) []poll.Option {
	return []poll.Option{
		poll.WithArch(cfg.Arch),
		poll.WithDataDir(cfg.DataDir),
		poll.WithSlots(cfg.MaxConcurrentBuilds),
		poll.WithPollInterval(cfg.PollingFrequency.D()),
		poll.WithGracePeriod(cfg.ShutdownGrace.D()),
		poll.WithDeliverTimeout(cfg.DeliverTimeout.D()),
		poll.WithRequestTimeout(cfg.RequestTimeout.D()),
		poll.WithUploadTimeout(cfg.UploadTimeout.D()),
		poll.WithDefaultTimeout(cfg.BuildTimeout.D()),
		poll.WithFsync(cfg.Fsync),
		poll.WithLogLimit(int64(cfg.BuildLimits.Log)),
		poll.WithAgentName(cfg.AgentName),
		poll.WithVersion(version),
	}
}

// vieterClient returns the Vieter client of the configuration: the agent's one
// client, shared by the poll loop and the builds.
func vieterClient(cfg *config.Config, opts ...vieter.Option) (*vieter.Client, error) {
	return vieter.NewClient(cfg.Address, cfg.APIKey.Reveal(), append([]vieter.Option{vieter.WithUserAgent("vagent/" + version)}, opts...)...)
}

// registryOptions returns the registry options of the configuration. It reads
// the password files.
func registryOptions(cfg *config.Config) ([]oci.Option, error) {
	rg := cfg.Registries
	var opts []oci.Option
	for host, ms := range rg.Mirrors {
		opts = append(opts, oci.WithMirrors(host, ms...))
	}
	if len(rg.Insecure) > 0 {
		opts = append(opts, oci.WithInsecure(rg.Insecure...))
	}
	if rg.CAFile != "" {
		opts = append(opts, oci.WithCABundle(rg.CAFile))
	}
	if rg.DockerConfig != "" {
		opts = append(opts, oci.WithDockerConfig(rg.DockerConfig))
	}
	for host, cr := range rg.Credentials {
		pass := cr.Password.Reveal()
		if cr.PasswordFile != "" {
			b, err := os.ReadFile(cr.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("registries.credentials.%s.password_file: %w", host, err)
			}
			pass = strings.TrimRight(string(b), "\r\n")
		}
		opts = append(opts, oci.WithCredentials(host, cr.Username, pass))
	}
	return opts, nil
}

// sandboxLimits returns the build limits as sandbox limits.
func sandboxLimits(cfg *config.Config) sandbox.Limits {
	bl := cfg.BuildLimits
	l := sandbox.Limits{Memory: int64(bl.Memory), MemorySwap: int64(bl.MemorySwap), Pids: bl.Pids, CPUWeight: bl.CPUWeight, CPUQuota: bl.CPUs, Disk: int64(bl.Disk)}
	if !bl.PidsSet && rootless() && sandbox.CgroupDelegated() != nil {
		l.Pids = 0 // the default, which nothing can apply here (warnUnlimited says so)
	}
	return l
}

// sandboxOptions returns the sandbox options of the configuration but the
// id range, which depends on the data dir too (resolveIDRange, openSandbox).
// Rootless, the id range is not the configuration's at all: builds map to
// the user's subordinate ids.
func sandboxOptions(cfg *config.Config) []sandbox.Option {
	return []sandbox.Option{sandbox.WithDefaultLimits(sandboxLimits(cfg)),
		sandbox.WithTmpSize(int64(cfg.BuildLimits.Tmp)), sandbox.WithNetworkDeny(cfg.NetworkDeny()...)}
}

// networkMode is build_network.mode.
func networkMode(cfg *config.Config) sandbox.NetworkMode {
	m, _ := sandbox.ParseNetworkMode(cfg.BuildNetwork.Mode)
	return m
}

// buildForwards are the endpoints builds reach besides the server (which
// the build package adds): build_network.forward, and the servers of
// pacman_mirrors and pacman_repos, which are in the builder image's
// pacman.conf.
func buildForwards(cfg *config.Config) []string {
	urls := append([]string(nil), cfg.PacmanMirrorList()...)
	for _, r := range cfg.PacmanRepos {
		urls = append(urls, r.Servers...)
	}
	return sandbox.ForwardsFor(cfg.BuildNetwork.Forward, urls...)
}

// jobNetworkOptions are the network options of builds.
func jobNetworkOptions(cfg *config.Config) []job.Option {
	return []job.Option{job.WithNetwork(networkMode(cfg), buildForwards(cfg)...), job.WithOfflineBuild(cfg.BuildNetwork.OfflineBuild)}
}

// setupNetwork is the network of builder setups: the host's when builds
// have it, isolated otherwise (also for mode none: a setup runs pacman
// -Syu from the configured mirrors, no job's code).
func setupNetwork(cfg *config.Config) sandbox.NetworkMode {
	if networkMode(cfg) == sandbox.NetworkHost {
		return sandbox.NetworkHost
	}
	return sandbox.NetworkIsolated
}

// builderImageOptions returns the builder-image options of the configuration.
func builderImageOptions(cfg *config.Config) []builder.Option {
	opts := []builder.Option{builder.WithMaxAge(cfg.ImageRebuildFrequency.D()), builder.WithPackages(cfg.BuilderPkgs...),
		builder.WithNetwork(setupNetwork(cfg), cfg.BuildNetwork.Forward...)}
	if ms := cfg.PacmanMirrorList(); len(ms) > 0 {
		opts = append(opts, builder.WithMirrorList(ms...))
	}
	if repos := builderRepos(cfg); len(repos) > 0 {
		opts = append(opts, builder.WithRepos(repos...))
	}
	return opts
}

func builderRepos(cfg *config.Config) []pacman.Repo {
	var out []pacman.Repo
	for _, r := range cfg.PacmanRepos {
		out = append(out, pacman.Repo{Name: r.Name, Servers: r.Servers, SigLevel: r.SigLevel})
	}
	return out
}

// pacmanCacheDir is the directory of the package caches, "" when the
// caches are off.
func pacmanCacheDir(cfg *config.Config) string {
	switch {
	case !cfg.PacmanCache.Enabled:
		return ""
	case cfg.PacmanCache.Dir != "":
		return cfg.PacmanCache.Dir
	}
	return filepath.Join(cfg.DataDir, pacmanCacheSubdir)
}

// pacmanCacheSubdir is the data dir's Pacman package caches (one per
// target), of `vagent run` and `vagent build` alike.
const pacmanCacheSubdir = "pacman-cache"

// logFilePath is where the agent writes its log besides stderr, "" for
// nowhere (log_file: -).
func logFilePath(cfg *config.Config) string {
	switch cfg.LogFile {
	case "-":
		return ""
	case "":
		return filepath.Join(cfg.DataDir, "vagent.log")
	}
	return cfg.LogFile
}
