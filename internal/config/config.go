package config

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

// Config is agent.yaml. Every key has a default (see Default and
// docs/configuration.md) except address and api_key. Load reads it.
type Config struct {
	// The reference agent's keys.
	Address string `yaml:"address"`
	APIKey  Secret `yaml:"api_key"`
	Arch    string `yaml:"arch"`
	DataDir string `yaml:"data_dir"`
	// DataDirSet: data_dir comes from the file or a variable. Otherwise
	// DataDir is root's DefaultDataDir, and the command puts the data dir
	// of an ordinary user's vagent in its place.
	DataDirSet            bool     `yaml:"-" json:"-"`
	MaxConcurrentBuilds   int      `yaml:"max_concurrent_builds"`
	PollingFrequency      Duration `yaml:"polling_frequency" unit:"s"`
	ImageRebuildFrequency Duration `yaml:"image_rebuild_frequency" unit:"m"`
	LogLevel              string   `yaml:"log_level"`

	// vagent's own keys.
	AgentName      string       `yaml:"agent_name"`
	LogFormat      string       `yaml:"log_format"`
	LogFile        string       `yaml:"log_file"`
	MetricsAddress string       `yaml:"metrics_address"`
	BuildTimeout   Duration     `yaml:"build_timeout"`
	ShutdownGrace  Duration     `yaml:"shutdown_grace"`
	DeliverTimeout Duration     `yaml:"deliver_timeout"`
	RequestTimeout Duration     `yaml:"request_timeout"`
	UploadTimeout  Duration     `yaml:"upload_timeout"`
	Fsync          bool         `yaml:"fsync"`
	IDRange        IDRange      `yaml:"id_range"`
	BuildLimits    BuildLimits  `yaml:"build_limits"`
	PacmanCache    PacmanCache  `yaml:"pacman_cache"`
	BuilderPkgs    []string     `yaml:"builder_packages"`
	PacmanMirrors  []string     `yaml:"pacman_mirrors"`
	Mirrors        []string     `yaml:"mirrors"` // deprecated name of pacman_mirrors
	PacmanRepos    []PacmanRepo `yaml:"pacman_repos"`
	Registries     Registries   `yaml:"registries"`
	BuildNetwork   BuildNetwork `yaml:"build_network"`

	// Warnings are what Load found suspicious but valid (secrets
	// readable by other users), for the caller to log.
	Warnings []string `yaml:"-" json:"-"`
}

// IDRange is the host id range mapped into build user namespaces.
type IDRange struct {
	// Base 0 (unset) means the data dir's own range: recorded there, or
	// picked free (cmd/vagent's resolveIDRange).
	Base uint32 `yaml:"base"`
	Size uint32 `yaml:"size"`
	// AllowConflicts lets `vagent run` start although host users, groups
	// or subordinate id entries use ids of the range.
	AllowConflicts bool `yaml:"allow_conflicts"`
}

// BuildLimits are the cgroup limits of one build.
type BuildLimits struct {
	Memory     Size  `yaml:"memory"`
	MemorySwap Size  `yaml:"memory_swap"`
	Pids       int64 `yaml:"pids"`
	// PidsSet: pids comes from the file or a variable, not the default.
	// A rootless agent without a delegated cgroup drops the default
	// (nothing can apply it) but refuses a configured one.
	PidsSet   bool    `yaml:"-" json:"-"`
	CPUs      float64 `yaml:"cpus"`
	CPUWeight uint64  `yaml:"cpu_weight"`
	// Tmp is the size of the tmpfs on /tmp (memory, charged to Memory).
	Tmp Size `yaml:"tmp"`
	// Disk bounds what a build adds to the disk (sandbox.Limits.Disk).
	Disk Size `yaml:"disk"`
	// Log caps a build's log (poll.WithLogLimit).
	Log Size `yaml:"log"`
}

// BuildNetwork is the network of builds and builder setups.
type BuildNetwork struct {
	// Mode is isolated (a network namespace per build), host (the host's
	// network: unsafe) or none (loopback only).
	Mode string `yaml:"mode"`
	// OfflineBuild runs build() and package() without network.
	OfflineBuild bool `yaml:"offline_build"`
	// Forward lists further host:port endpoints builds reach (a local git
	// mirror on the host's loopback).
	Forward []string `yaml:"forward"`
	// Deny lists further destinations builds are refused (CIDRs or
	// addresses).
	Deny []string `yaml:"deny"`
}

// PacmanCache is the package caches of the targets' builds.
type PacmanCache struct {
	Enabled bool   `yaml:"enabled"`
	Dir     string `yaml:"dir"`
	// MaxSize bounds the caches together (job.WithCacheMaxSize).
	MaxSize Size `yaml:"max_size"`
	// Sources keeps makepkg's sources in each target's cache
	// (job.WithSourceCache).
	Sources bool `yaml:"sources"`
}

// PacmanRepo is an extra Pacman repository of builders and builds.
type PacmanRepo struct {
	Name     string   `yaml:"name"`
	Servers  []string `yaml:"servers"`
	SigLevel string   `yaml:"sig_level"`
}

// Registries configures how base images are pulled.
type Registries struct {
	Mirrors      map[string][]string   `yaml:"mirrors"`
	Insecure     []string              `yaml:"insecure"`
	CAFile       string                `yaml:"ca_file"`
	DockerConfig string                `yaml:"docker_config"`
	Credentials  map[string]Credential `yaml:"credentials"`
}

// Credential is a registry login.
type Credential struct {
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// DefaultDataDir is data_dir's default.
const DefaultDataDir = "/var/lib/vagent"

// defaultCacheMaxSize is pacman_cache.max_size's default: the same as
// job.DefaultCacheMaxSize (cmd/vagent's TestConfigDefaultsAgree), written
// here because the configuration does not import the build package (the
// sandbox's and poll's defaults it takes from them).
const defaultCacheMaxSize = 16 << 30

// Default is the configuration of an empty file: every default, no
// address and no api_key.
func Default() Config {
	return Config{
		Arch:                  pacman.Arch(runtime.GOARCH),
		DataDir:               DefaultDataDir,
		MaxConcurrentBuilds:   1,
		PollingFrequency:      Duration(30 * time.Second),
		ImageRebuildFrequency: Duration(1440 * time.Minute),
		LogLevel:              "INFO",
		AgentName:             defaultAgentName(),
		LogFormat:             "text",
		BuildTimeout:          Duration(time.Hour),
		ShutdownGrace:         Duration(5 * time.Minute),
		DeliverTimeout:        Duration(30 * time.Second),
		RequestTimeout:        Duration(time.Minute),
		UploadTimeout:         Duration(10 * time.Minute),
		Fsync:                 true,
		IDRange:               IDRange{Size: 65536},
		BuildLimits:           BuildLimits{Pids: 4096, Tmp: sandbox.DefaultTmpSize, Log: poll.DefaultLogLimit},
		PacmanCache:           PacmanCache{Enabled: true, MaxSize: defaultCacheMaxSize},
		BuildNetwork:          BuildNetwork{Mode: sandbox.NetworkIsolated.String()},
		BuilderPkgs:           []string{"base-devel", "git"},
	}
}

// defaultAgentName is the host's name, or "vagent" when it has none that
// makes an agent name.
func defaultAgentName() string {
	h, err := os.Hostname()
	if err != nil || checkAgentName(h) != nil {
		return "vagent"
	}
	return h
}

// String prints the configuration with its secrets masked.
func (c *Config) String() string {
	type plain Config // without this method
	return fmt.Sprintf("%+v", plain(*c))
}

// LogValue is the configuration for log/slog, secrets masked.
func (c *Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// NetworkDeny is build_network.deny, as prefixes (an address is the
// prefix of that one address).
func (c *Config) NetworkDeny() []netip.Prefix {
	var out []netip.Prefix
	for _, d := range c.BuildNetwork.Deny {
		if p, err := parseDeny(d); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// PacmanMirrorList is pacman_mirrors, or its deprecated name mirrors.
func (c *Config) PacmanMirrorList() []string {
	if len(c.PacmanMirrors) > 0 {
		return c.PacmanMirrors
	}
	return c.Mirrors
}
