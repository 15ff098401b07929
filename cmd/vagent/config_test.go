package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/sandbox"
)

// agent.yaml's own tests (keys, defaults, errors, variables, redaction)
// are internal/config's; these test what the commands make of it.

const (
	testKey = "s3cr3t-api-key-9f8e"
	minimal = "address: https://vieter.example.org\napi_key: " + testKey + "\n"
)

func noEnv(string) string { return "" }

// parseConfig parses yaml as agent.yaml without environment.
func parseConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse("agent.yaml", []byte(yaml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConfigOptions: the options and paths the commands derive from a
// configuration.
func TestConfigOptions(t *testing.T) {
	tests := []struct {
		yaml  string
		check func(c *config.Config) any // returns the value to compare with want
		want  any
	}{
		// The defaults.
		{"", func(c *config.Config) any { return logFilePath(c) }, "/var/lib/vagent/vagent.log"},
		{"", func(c *config.Config) any { return pacmanCacheDir(c) }, "/var/lib/vagent/pacman-cache"},
		{"", func(c *config.Config) any { return networkMode(c) }, sandbox.NetworkIsolated},
		{"", func(c *config.Config) any { return setupNetwork(c) }, sandbox.NetworkIsolated},
		{"", func(c *config.Config) any { return sandboxLimits(c) }, sandbox.Limits{Pids: 4096}},
		{"log_file: /var/log/vagent.log", func(c *config.Config) any { return logFilePath(c) }, "/var/log/vagent.log"},
		{"log_file: '-'", func(c *config.Config) any { return logFilePath(c) }, ""},
		{"build_limits: {disk: 10G}", func(c *config.Config) any { return sandboxLimits(c).Disk }, int64(10 << 30)},
		{"build_limits: {memory: 512M, memory_swap: -1}", func(c *config.Config) any { return sandboxLimits(c).MemorySwap }, int64(-1)},
		{"build_limits: {memory: 2GB}", func(c *config.Config) any { return sandboxLimits(c).Memory }, int64(2e9)},
		{"build_limits: {memory: 1.5GiB}", func(c *config.Config) any { return sandboxLimits(c).Memory }, int64(3 << 29)},
		{"build_limits: {pids: 0}", func(c *config.Config) any { return sandboxLimits(c).Pids }, int64(0)},
		{"build_limits: {cpus: 1.5, cpu_weight: 50}", func(c *config.Config) any { return []any{sandboxLimits(c).CPUQuota, sandboxLimits(c).CPUWeight} }, []any{1.5, uint64(50)}},
		{"pacman_cache: {enabled: false}", func(c *config.Config) any { return pacmanCacheDir(c) }, ""},
		{"pacman_cache: {dir: /cache}", func(c *config.Config) any { return pacmanCacheDir(c) }, "/cache"},
		{"build_network:\n  mode: none", func(c *config.Config) any { return networkMode(c) }, sandbox.NetworkNone},
		{"build_network:\n  mode: none", func(c *config.Config) any { return setupNetwork(c) }, sandbox.NetworkIsolated},
		{"build_network:\n  mode: host", func(c *config.Config) any { return setupNetwork(c) }, sandbox.NetworkHost},
		{"build_network: {offline_build: true, forward: ['127.0.0.1:9418', 'localhost:8080'], deny: [10.0.0.0/8, 192.168.1.7, 'fd00::/8']}",
			func(c *config.Config) any {
				return []any{c.BuildNetwork.OfflineBuild, buildForwards(c), c.NetworkDeny()}
			},
			[]any{true, []string{"127.0.0.1:9418", "localhost:8080"}, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::/8")}}},
		// Builds reach the servers of the builder image's pacman.conf.
		{"pacman_mirrors: ['http://127.0.0.1:8080/$repo/os/$arch']\npacman_repos: [{name: r, servers: ['https://repo.example.org/$repo/$arch']}]\nbuild_network: {forward: ['[::1]:22']}",
			func(c *config.Config) any { return buildForwards(c) }, []string{"[::1]:22", "127.0.0.1:8080", "repo.example.org:443"}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.yaml, "\n", " "), func(t *testing.T) {
			c := parseConfig(t, minimal+tt.yaml+"\n")
			if got := tt.check(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestConfigHelpers: the options built from a configuration.
func TestConfigHelpers(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := parseConfig(t, minimal+"registries:\n  mirrors: {docker.io: [m:5000]}\n  insecure: [m:5000]\n  credentials:\n    m:5000: {username: u, password_file: "+pw+"}\n")
	if n := len(pollOptions(c)); n != 13 {
		t.Errorf("%d poll options", n)
	}
	opts, err := registryOptions(c)
	if err != nil || len(opts) != 3 {
		t.Errorf("oci options: %d, %v", len(opts), err)
	}
	c.Registries.Credentials["m:5000"] = config.Credential{Username: "u", PasswordFile: filepath.Join(dir, "none")}
	if _, err := registryOptions(c); err == nil || !strings.Contains(err.Error(), "registries.credentials.m:5000.password_file") {
		t.Errorf("missing password file: %v", err)
	}
	if l := sandboxLimits(c); l.Pids != 4096 || l.Memory != 0 {
		t.Errorf("limits %+v", l)
	}
	if _, err := vieterClient(c); err != nil {
		t.Error(err)
	}
}

// TestConfigDefaultsAgree: pacman_cache.max_size's default, which package
// config restates (it does not import job), is job's; data_dir's is the
// command's.
func TestConfigDefaultsAgree(t *testing.T) {
	d := config.Default()
	if got, want := int64(d.PacmanCache.MaxSize), int64(job.DefaultCacheMaxSize); got != want {
		t.Errorf("pacman_cache.max_size default %d, job.DefaultCacheMaxSize %d", got, want)
	}
	if defaultDataDir != d.DataDir {
		t.Errorf("defaultDataDir %q, data_dir's default %q", defaultDataDir, d.DataDir)
	}
}

// TestNetworkModes: each build_network.mode is the sandbox's mode of that
// name.
func TestNetworkModes(t *testing.T) {
	for _, m := range []sandbox.NetworkMode{sandbox.NetworkIsolated, sandbox.NetworkHost, sandbox.NetworkNone} {
		c := parseConfig(t, minimal+"build_network: {mode: "+m.String()+"}\n")
		if networkMode(c) != m {
			t.Errorf("mode %s: %v", m, networkMode(c))
		}
	}
	if networkMode(parseConfig(t, minimal)) != sandbox.NetworkIsolated {
		t.Errorf("the default mode is not isolated")
	}
}

// TestIDRangeConflicts: `vagent run` refuses an id range that host users
// or subordinate id entries use, unless id_range.allow_conflicts says so.
func TestIDRangeConflicts(t *testing.T) {
	c := parseConfig(t, "address: https://vieter.example\napi_key: k\n")
	if err := checkIDRange(c, nil); err != nil {
		t.Errorf("no conflicts: %v", err)
	}
	err := checkIDRange(c, []string{"/etc/subuid alice:100000:65536"})
	if err == nil || !strings.Contains(err.Error(), "alice") || !strings.Contains(err.Error(), "allow_conflicts") {
		t.Errorf("conflict: %v", err)
	}
	c.IDRange.AllowConflicts = true
	if err := checkIDRange(c, []string{"/etc/subuid alice:100000:65536"}); err != nil {
		t.Errorf("allowed conflict: %v", err)
	}
}

// TestConfigDeprecatedMirrors: the commands warn about mirrors, the old
// name of pacman_mirrors (internal/config's TestConfigDeprecatedMirrors
// reads it).
func TestConfigDeprecatedMirrors(t *testing.T) {
	const m = "https://m1/$repo/os/$arch"
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(minimal+"data_dir: "+dir+"\nmirrors: ["+m+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI("status", "--config", cfg); code != 0 || !strings.Contains(errOut, "mirrors (VIETER_MIRRORS) is deprecated: it is pacman_mirrors") {
		t.Errorf("status --config: exit %d, stderr %q", code, errOut)
	}
}
