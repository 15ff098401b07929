package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/pacman"
)

const (
	testKey = "s3cr3t-api-key-9f8e"
	minimal = "address: https://vieter.example.org\napi_key: " + testKey + "\n"
)

func noEnv(string) string { return "" }

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// minimalConfig is the configuration of the minimal file: the defaults.
func minimalConfig() Config {
	c := Default()
	c.Address, c.APIKey = "https://vieter.example.org", testKey
	return c
}

func TestConfigDefaults(t *testing.T) {
	c, err := Parse("agent.yaml", []byte(minimal), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := minimalConfig()
	if diff := cmp.Diff(&want, c); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	// The documented defaults.
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", c.DataDir, "/var/lib/vagent"},
		{"data_dir set", c.DataDirSet, false},
		{"build_limits.pids set", c.BuildLimits.PidsSet, false},
		{"max_concurrent_builds", c.MaxConcurrentBuilds, 1},
		{"polling_frequency", c.PollingFrequency.D(), 30 * time.Second},
		{"image_rebuild_frequency", c.ImageRebuildFrequency.D(), 1440 * time.Minute},
		{"log_level", c.LogLevel, "INFO"},
		{"agent_name", c.AgentName, defaultAgentName()},
		{"log_format", c.LogFormat, "text"},
		{"log_file", c.LogFile, ""},
		{"metrics_address", c.MetricsAddress, ""},
		{"build_timeout", c.BuildTimeout.D(), time.Hour},
		{"shutdown_grace", c.ShutdownGrace.D(), 5 * time.Minute},
		{"fsync", c.Fsync, true},
		{"id_range", c.IDRange, IDRange{Size: 65536}},
		{"build_limits", c.BuildLimits, BuildLimits{Pids: 4096, Tmp: 1 << 30, Log: 64 << 20}},
		{"pacman_cache", c.PacmanCache, PacmanCache{Enabled: true, MaxSize: 16 << 30}},
		{"pacman_cache.max_size", c.PacmanCache.MaxSize, Size(16 << 30)},
		{"pacman_cache.sources", c.PacmanCache.Sources, false},
		{"builder_packages", c.BuilderPkgs, []string{"base-devel", "git"}},
		{"build_network", c.BuildNetwork, BuildNetwork{Mode: "isolated"}},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

// TestConfigKeys sets every key in a file and checks the result.
func TestConfigKeys(t *testing.T) {
	tests := []struct {
		yaml  string
		check func(c *Config) any // returns the value to compare with want
		want  any
	}{
		{"arch: aarch64", func(c *Config) any { return c.Arch }, "aarch64"},
		{"data_dir: /srv/vagent", func(c *Config) any { return c.DataDir }, "/srv/vagent"},
		{"data_dir: /srv/vagent", func(c *Config) any { return c.DataDirSet }, true},
		{"max_concurrent_builds: 4", func(c *Config) any { return c.MaxConcurrentBuilds }, 4},
		{"polling_frequency: 10", func(c *Config) any { return c.PollingFrequency.D() }, 10 * time.Second},
		{"polling_frequency: 1m30s", func(c *Config) any { return c.PollingFrequency.D() }, 90 * time.Second},
		{"image_rebuild_frequency: 60", func(c *Config) any { return c.ImageRebuildFrequency.D() }, time.Hour},
		{"image_rebuild_frequency: 2h", func(c *Config) any { return c.ImageRebuildFrequency.D() }, 2 * time.Hour},
		{"log_level: debug", func(c *Config) any { return c.LogLevel }, "debug"},
		{"log_format: json", func(c *Config) any { return c.LogFormat }, "json"},
		{"log_file: /var/log/vagent.log", func(c *Config) any { return c.LogFile }, "/var/log/vagent.log"},
		{"log_file: '-'", func(c *Config) any { return c.LogFile }, "-"},
		{"metrics_address: 127.0.0.1:9100", func(c *Config) any { return c.MetricsAddress }, "127.0.0.1:9100"},
		{"metrics_address: ':9100'", func(c *Config) any { return c.MetricsAddress }, ":9100"},
		{"build_timeout: 2h", func(c *Config) any { return c.BuildTimeout.D() }, 2 * time.Hour},
		{"shutdown_grace: 0s", func(c *Config) any { return c.ShutdownGrace.D() }, time.Duration(0)},
		{"shutdown_grace: 90s", func(c *Config) any { return c.ShutdownGrace.D() }, 90 * time.Second},
		{"deliver_timeout: 1m", func(c *Config) any { return c.DeliverTimeout.D() }, time.Minute},
		{"request_timeout: 20s", func(c *Config) any { return c.RequestTimeout.D() }, 20 * time.Second},
		{"upload_timeout: 1h", func(c *Config) any { return c.UploadTimeout.D() }, time.Hour},
		{"fsync: false", func(c *Config) any { return c.Fsync }, false},
		{"id_range: {base: 200000, size: 131072}", func(c *Config) any { return c.IDRange }, IDRange{Base: 200000, Size: 131072}},
		{"build_limits:\n  memory: 4GiB\n  memory_swap: 6G\n  pids: 512\n  cpus: 1.5\n  cpu_weight: 50\n  tmp: 256M\n  log: 1M\n  disk: 20GiB",
			func(c *Config) any { return c.BuildLimits }, BuildLimits{Memory: 4 << 30, MemorySwap: 6 << 30, Pids: 512, PidsSet: true, CPUs: 1.5, CPUWeight: 50, Tmp: 256 << 20, Log: 1 << 20, Disk: 20 << 30}},
		{"build_limits: {disk: 10G}", func(c *Config) any { return c.BuildLimits.Disk }, Size(10 << 30)},
		{"pacman_cache: {max_size: 4GiB}", func(c *Config) any { return c.PacmanCache.MaxSize }, Size(4 << 30)},
		{"pacman_cache: {max_size: 0}", func(c *Config) any { return c.PacmanCache.MaxSize }, Size(0)},
		{"pacman_cache: {sources: true}", func(c *Config) any { return c.PacmanCache.Sources }, true},
		{"build_limits: {memory: 512M, memory_swap: -1}", func(c *Config) any { return c.BuildLimits.MemorySwap }, Size(-1)},
		{"build_limits: {memory: 2GB}", func(c *Config) any { return c.BuildLimits.Memory }, Size(2e9)},
		{"build_limits: {memory: 1.5GiB}", func(c *Config) any { return c.BuildLimits.Memory }, Size(3 << 29)},
		{"build_limits: {pids: 0}", func(c *Config) any { return c.BuildLimits.Pids }, int64(0)},
		{"pacman_cache: {enabled: false}", func(c *Config) any { return c.PacmanCache.Enabled }, false},
		{"pacman_cache: {dir: /cache}", func(c *Config) any { return c.PacmanCache.Dir }, "/cache"},
		{"builder_packages: [base-devel, git, extra/cmake]", func(c *Config) any { return c.BuilderPkgs }, []string{"base-devel", "git", "extra/cmake"}},
		{"builder_packages: []", func(c *Config) any { return len(c.BuilderPkgs) }, 0},
		{"mirrors: ['https://mirror.example/$repo/os/$arch']", func(c *Config) any { return c.Mirrors }, []string{"https://mirror.example/$repo/os/$arch"}},
		{"pacman_repos:\n- name: vieter\n  servers: [https://vieter.example.org/$repo/$arch]\n  sig_level: Optional",
			func(c *Config) any { return c.PacmanRepos }, []PacmanRepo{{"vieter", []string{"https://vieter.example.org/$repo/$arch"}, "Optional"}}},
		{"registries:\n  mirrors: {docker.io: [mirror.local:5000, 'http://10.0.0.1:5000']}\n  insecure: [registry.local:5000]\n  ca_file: /etc/ca.pem\n  docker_config: /root/.docker/config.json",
			func(c *Config) any { return c.Registries }, Registries{Mirrors: map[string][]string{"docker.io": {"mirror.local:5000", "http://10.0.0.1:5000"}},
				Insecure: []string{"registry.local:5000"}, CAFile: "/etc/ca.pem", DockerConfig: "/root/.docker/config.json"}},
		{"registries:\n  credentials:\n    registry.local:5000: {username: bob, password: pw}\n    ghcr.io: {username: alice, password_file: /run/secrets/ghcr}",
			func(c *Config) any { return c.Registries.Credentials }, map[string]Credential{"registry.local:5000": {Username: "bob", Password: "pw"},
				"ghcr.io": {Username: "alice", PasswordFile: "/run/secrets/ghcr"}}},
		{"build_network:\n  mode: none", func(c *Config) any { return c.BuildNetwork.Mode }, "none"},
		{"build_network: {offline_build: true, forward: ['127.0.0.1:9418', 'localhost:8080'], deny: [10.0.0.0/8, 192.168.1.7, 'fd00::/8']}",
			func(c *Config) any {
				return []any{c.BuildNetwork.OfflineBuild, c.BuildNetwork.Forward, c.NetworkDeny()}
			},
			[]any{true, []string{"127.0.0.1:9418", "localhost:8080"}, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::/8")}}},
		{"arch:", func(c *Config) any { return c.Arch }, pacman.Arch("amd64")}, // an empty value keeps the default (amd64 CI)
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.yaml, "\n", " "), func(t *testing.T) {
			if tt.yaml == "arch:" && pacman.Arch("amd64") != Default().Arch {
				t.Skip("not an amd64 machine")
			}
			c, err := Parse("agent.yaml", []byte(minimal+tt.yaml+"\n"), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.check(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestConfigErrors: every invalid value is rejected, naming the file, the
// line and the key.
func TestConfigErrors(t *testing.T) {
	tests := []struct {
		yaml string
		want string // the whole error, or a regexp with "re:"
	}{
		{"max_concurrent_builds: 0", "agent.yaml:3: max_concurrent_builds: must be ≥ 1 and ≤ 1024, got 0"},
		{"max_concurrent_builds: many", `agent.yaml:3: max_concurrent_builds: must be an integer, got "many"`},
		{"max_concurrent_builds: [1]", "agent.yaml:3: max_concurrent_builds: must be a single value"},
		{"polling_frequency: 0", "agent.yaml:3: polling_frequency: must be at least 1s, got 0s"},
		{"polling_frequency: soon", `agent.yaml:3: polling_frequency: "soon" is not a duration (e.g. 90s, 5m, 1h30m)`},
		{"polling_frequency: -5s", `agent.yaml:3: polling_frequency: "-5s" is negative`},
		{"image_rebuild_frequency: 30s", "agent.yaml:3: image_rebuild_frequency: must be at least 1m0s, got 30s"},
		{"build_timeout: 60", `agent.yaml:3: build_timeout: "60" needs a unit, e.g. 60s`},
		{"upload_timeout: 0s", "agent.yaml:3: upload_timeout: must be at least 1s, got 0s"},
		{"request_timeout: 0s", "agent.yaml:3: request_timeout: must be at least 1s, got 0s"},
		{"deliver_timeout: 0s", "agent.yaml:3: deliver_timeout: must be at least 1s, got 0s"},
		{"shutdown_grace: -1s", `agent.yaml:3: shutdown_grace: "-1s" is negative`},
		{"log_level: LOUD", `agent.yaml:3: log_level: must be FATAL, ERROR, WARN, INFO or DEBUG, got "LOUD"`},
		{"log_format: xml", `agent.yaml:3: log_format: must be text or json, got "xml"`},
		{"log_file: vagent.log", `agent.yaml:3: log_file: must be an absolute path or -, got "vagent.log"`},
		{"arch: x86 64", `agent.yaml:3: arch: must be a Pacman architecture name such as x86_64, got "x86 64"`},
		{"data_dir: relative/dir", `agent.yaml:3: data_dir: must be an absolute path, got "relative/dir"`},
		{"metrics_address: localhost", `agent.yaml:3: metrics_address: must be host:port (e.g. 127.0.0.1:9100 or :9100), got "localhost"`},
		{"metrics_address: ':http'", `agent.yaml:3: metrics_address: must be host:port (e.g. 127.0.0.1:9100 or :9100), got ":http"`},
		{"fsync: maybe", `agent.yaml:3: fsync: must be true or false, got "maybe"`},
		{"id_range: {base: 0}", "agent.yaml:3: id_range.base: must be ≥ 1 (host id 0 is root), got 0; leave it out to let vagent pick a free range"},
		{"id_range:\n  size: 1000", "agent.yaml:4: id_range.size: must be ≥ 65536 (a build needs every 16-bit id), got 1000"},
		{"id_range: {base: 4294967000}", "agent.yaml:3: id_range.size: base + size must be < 2^32"},
		{"id_range: {base: -1}", `agent.yaml:3: id_range.base: must be a non-negative integer, got "-1"`},
		{"id_range: 5", "agent.yaml:3: id_range: must be a mapping"},
		{"build_limits:\n  memory: lots", `agent.yaml:4: build_limits.memory: "lots" is not a size (e.g. 512M, 4GiB)`},
		{"build_limits:\n  memory: 1M", "agent.yaml:4: build_limits.memory: must be at least 16MiB, got 1MiB"},
		{"build_limits:\n  memory: 4Gi", `agent.yaml:4: build_limits.memory: "4Gi" is not a size (e.g. 512M, 4GiB)`},
		{"build_limits:\n  memory: 1G\n  memory_swap: 512M", "agent.yaml:5: build_limits.memory_swap: is memory plus swap: must be ≥ memory (1GiB), got 512MiB"},
		{"build_limits:\n  memory_swap: 1G", "agent.yaml:4: build_limits.memory_swap: needs build_limits.memory"},
		{"build_limits:\n  pids: -2", "agent.yaml:4: build_limits.pids: must be ≥ 0 (0: no limit), got -2"},
		{"build_limits:\n  cpus: -1", "agent.yaml:4: build_limits.cpus: must be a number of CPUs ≥ 0 (0: no limit), got -1"},
		{"build_limits:\n  cpus: .nan", "agent.yaml:4: build_limits.cpus: must be a number of CPUs ≥ 0 (0: no limit), got NaN"},
		{"build_limits:\n  cpu_weight: 20000", "agent.yaml:4: build_limits.cpu_weight: must be 1–10000 or 0 (the default weight), got 20000"},
		{"build_limits:\n  disk: 1M", "agent.yaml:4: build_limits.disk: must be a size of at least 64MiB or 0 (no limit), got 1MiB"},
		{"pacman_cache:\n  max_size: -1", "agent.yaml:4: pacman_cache.max_size: must be a size or 0 (no bound), got unlimited"},
		{"pacman_cache:\n  dir: cache", `agent.yaml:4: pacman_cache.dir: must be an absolute path, got "cache"`},
		{"builder_packages: [base-devel, 'rm -rf /']", `agent.yaml:3: builder_packages[1]: not a package name: "rm -rf /"`},
		{"builder_packages: git", "agent.yaml:3: builder_packages: must be a list"},
		{"mirrors: [ftp://x]", `agent.yaml:3: mirrors[0]: must be an http, https or file URL, got "ftp://x"`},
		{"pacman_repos:\n- name: 'a b'\n  servers: [http://x/]", `agent.yaml:4: pacman_repos[0].name: must be a repository name (a letter or digit, then letters, digits and ._+-; not options), got "a b"`},
		// One rule everywhere (package pacman): "_x" is refused here as by builds, "a+b" accepted as by builds.
		{"pacman_repos:\n- name: _x\n  servers: [http://x/]", `agent.yaml:4: pacman_repos[0].name: must be a repository name (a letter or digit, then letters, digits and ._+-; not options), got "_x"`},
		{"pacman_repos:\n- name: options\n  servers: [http://x/]", `agent.yaml:4: pacman_repos[0].name: must be a repository name (a letter or digit, then letters, digits and ._+-; not options), got "options"`},
		{"pacman_repos:\n- name: a\n  servers: [http://x/]\n- name: a\n  servers: [http://y/]", `agent.yaml:6: pacman_repos[1].name: "a" is listed twice`},
		{"pacman_repos:\n- name: a", "agent.yaml:4: pacman_repos[0].servers: needs at least one server"},
		{"pacman_repos:\n- name: a\n  servers: [http://x/]\n  sig_level: \"Never\\n[evil]\"", `agent.yaml:6: pacman_repos[0].sig_level: must be Pacman SigLevel words (e.g. Optional TrustAll), got "Never\n[evil]"`},
		{"registries:\n  insecure: ['a b']", `agent.yaml:4: registries.insecure[0]: not a registry host: "a b"`},
		{"registries:\n  mirrors: {docker.io: ['']}", `agent.yaml:4: registries.mirrors.docker.io[0]: not a mirror: ""`},
		{"registries:\n  ca_file: ca.pem", "agent.yaml:4: registries.ca_file: must be an absolute path"},
		{"registries:\n  docker_config: d.json", "agent.yaml:4: registries.docker_config: must be an absolute path"},
		{"registries:\n  credentials:\n    ghcr.io: {username: a}", "agent.yaml:5: registries.credentials.ghcr.io: needs password or password_file (one of them)"},
		{"registries:\n  credentials:\n    ghcr.io: {password: p}", "agent.yaml:5: registries.credentials.ghcr.io.username: required"},
		{"registries:\n  credentials:\n    ghcr.io: {username: a, password: p, password_file: /f}", "agent.yaml:5: registries.credentials.ghcr.io: needs password or password_file (one of them)"},
		{"registries:\n  credentials:\n    ghcr.io: {username: a, pasword: p}", "agent.yaml:5: registries.credentials.ghcr.io.pasword: unknown key; did you mean registries.credentials.ghcr.io.password?"},
		// Unknown and repeated keys.
		{"build_network: {mode: bridge}", `agent.yaml:3: build_network.mode: must be isolated, host or none, got "bridge"`},
		{"build_network:\n  forward: [127.0.0.1]", `agent.yaml:4: build_network.forward[0]: must be host:port (e.g. 127.0.0.1:9418), got "127.0.0.1"`},
		{"build_network:\n  deny: [10.0.0.0/33]", `agent.yaml:4: build_network.deny[0]: must be an address or a CIDR prefix (e.g. 10.0.0.0/8), got "10.0.0.0/33"`},
		{"build_network:\n  mode: host\n  offline_build: true", "agent.yaml:5: build_network.offline_build: needs build_network.mode: isolated (the agent cuts an isolated network), not host"},
		{"max_concurent_builds: 2", "agent.yaml:3: max_concurent_builds: unknown key; did you mean max_concurrent_builds?"},
		{"build_limits:\n  memroy: 1G", "agent.yaml:4: build_limits.memroy: unknown key; did you mean build_limits.memory?"},
		{"colour: blue", "agent.yaml:3: colour: unknown key"},
		{"arch: x86_64\narch: aarch64", "re:agent.yaml:4: arch: (set twice|mapping key \"arch\" already defined.*)"},
		{"key: [unclosed", "re:^agent.yaml:[0-9]+: did not find expected .*"},
		{"\tbad: indent", "re:^agent.yaml:[0-9]+: found a tab character that violates indentation$"},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.yaml, "\n", " "), func(t *testing.T) {
			_, err := Parse("agent.yaml", []byte(minimal+tt.yaml+"\n"), noEnv)
			if err == nil {
				t.Fatal("no error")
			}
			// The first error, by line, is the one expected.
			first, _, _ := strings.Cut(err.Error(), "\n")
			if re, ok := strings.CutPrefix(tt.want, "re:"); ok {
				if !regexp.MustCompile(re).MatchString(first) {
					t.Errorf("error %q does not match %q", err, re)
				}
			} else if first != tt.want {
				t.Errorf("error\n got %q\nwant %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Error("the error shows the api key")
			}
		})
	}
}

// TestConfigAllErrors: every error is reported at once, in line order,
// the environment's last.
func TestConfigAllErrors(t *testing.T) {
	file := "address: https://x\nfsync: maybe\napi_key: k\nmax_concurrent_builds: 0\nbogus: 1\n"
	_, err := Parse("agent.yaml", []byte(file), envMap(map[string]string{"VIETER_LOG_LEVEL": "LOUD"}))
	want := `agent.yaml:2: fsync: must be true or false, got "maybe"` + "\n" +
		"agent.yaml:4: max_concurrent_builds: must be ≥ 1 and ≤ 1024, got 0\n" +
		"agent.yaml:5: bogus: unknown key\n" +
		`VIETER_LOG_LEVEL: log_level: must be FATAL, ERROR, WARN, INFO or DEBUG, got "LOUD"`
	if err == nil || err.Error() != want {
		t.Errorf("error\n got %v\nwant %s", err, want)
	}
}

func TestConfigRequired(t *testing.T) {
	_, err := Parse("agent.yaml", nil, noEnv)
	want := "agent.yaml: address: required (the Vieter server's URL; or VIETER_ADDRESS)\n" +
		"agent.yaml: api_key: required (or VIETER_API_KEY, or VIETER_API_KEY_FILE)"
	if err == nil || err.Error() != want {
		t.Errorf("error\n got %v\nwant %s", err, want)
	}
	for _, addr := range []string{"vieter.example.org", "ftp://x", "https://user:pw@x", "https://x/?a=b", "http://"} {
		_, err := Parse("agent.yaml", []byte("address: '"+addr+"'\napi_key: k\n"), noEnv)
		if err == nil || !strings.HasPrefix(err.Error(), "agent.yaml:1: address: ") {
			t.Errorf("address %q: %v", addr, err)
		}
	}
	if _, err := Parse("agent.yaml", []byte("- a\n- b\n"), noEnv); err == nil || !strings.HasPrefix(err.Error(), "agent.yaml:1: must be a mapping\n") {
		t.Errorf("a list: %v", err)
	}
	// Without a file the errors name the environment.
	if _, err := Load("", noEnv); err == nil || !strings.HasPrefix(err.Error(), "environment: address: required") {
		t.Errorf("no file, no environment: %v", err)
	}
	// A file that does not exist.
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml"), noEnv); err == nil || !strings.Contains(err.Error(), "reading configuration") {
		t.Errorf("missing file: %v", err)
	}
}

// TestConfigEnv: every scalar key can be set with VIETER_<KEY>, nested
// keys joined with "_", and read from a file with VIETER_<KEY>_FILE.
func TestConfigEnv(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte("from-file-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"VIETER_ADDRESS":                     "http://10.0.0.2:8000",
		"VIETER_API_KEY_FILE":                keyFile,
		"VIETER_ARCH":                        "aarch64",
		"VIETER_DATA_DIR":                    "/data",
		"VIETER_MAX_CONCURRENT_BUILDS":       "3",
		"VIETER_POLLING_FREQUENCY":           "5",
		"VIETER_IMAGE_REBUILD_FREQUENCY":     "30",
		"VIETER_LOG_LEVEL":                   "INFO",
		"VIETER_LOG_FORMAT":                  "json",
		"VIETER_LOG_FILE":                    "-",
		"VIETER_METRICS_ADDRESS":             ":9100",
		"VIETER_BUILD_TIMEOUT":               "3h",
		"VIETER_SHUTDOWN_GRACE":              "1m",
		"VIETER_DELIVER_TIMEOUT":             "2m",
		"VIETER_REQUEST_TIMEOUT":             "15s",
		"VIETER_UPLOAD_TIMEOUT":              "20m",
		"VIETER_FSYNC":                       "false",
		"VIETER_ID_RANGE_BASE":               "300000",
		"VIETER_ID_RANGE_SIZE":               "65536",
		"VIETER_ID_RANGE_ALLOW_CONFLICTS":    "true",
		"VIETER_BUILD_LIMITS_MEMORY":         "8GiB",
		"VIETER_BUILD_LIMITS_MEMORY_SWAP":    "-1",
		"VIETER_BUILD_LIMITS_PIDS":           "100",
		"VIETER_BUILD_LIMITS_CPUS":           "2",
		"VIETER_BUILD_LIMITS_CPU_WEIGHT":     "200",
		"VIETER_BUILD_LIMITS_TMP":            "64MiB",
		"VIETER_BUILD_LIMITS_LOG":            "16MiB",
		"VIETER_BUILD_LIMITS_DISK":           "30GiB",
		"VIETER_PACMAN_CACHE_ENABLED":        "true",
		"VIETER_PACMAN_CACHE_DIR":            "/pc",
		"VIETER_PACMAN_CACHE_MAX_SIZE":       "2GiB",
		"VIETER_PACMAN_CACHE_SOURCES":        "true",
		"VIETER_BUILDER_PACKAGES":            "base-devel, git,cmake",
		"VIETER_PACMAN_MIRRORS":              "https://m1/$repo/os/$arch,https://m2/$repo/os/$arch",
		"VIETER_REGISTRIES_INSECURE":         "r1:5000,r2",
		"VIETER_REGISTRIES_CA_FILE":          "/ca.pem",
		"VIETER_REGISTRIES_DOCKER_CONFIG":    "/dc.json",
		"VIETER_AGENT_NAME":                  "build-02",
		"VIETER_BUILD_NETWORK_MODE":          "isolated",
		"VIETER_BUILD_NETWORK_OFFLINE_BUILD": "true",
		"VIETER_BUILD_NETWORK_FORWARD":       "127.0.0.1:9418, localhost:80",
		"VIETER_BUILD_NETWORK_DENY":          "10.0.0.0/8",
	}
	// The file's values are all overridden.
	file := minimal + "arch: x86_64\nmax_concurrent_builds: 8\nbuild_limits: {memory: 1G}\n"
	c, err := Parse("agent.yaml", []byte(file), envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Address: "http://10.0.0.2:8000", APIKey: "from-file-key", Arch: "aarch64", DataDir: "/data", DataDirSet: true, MaxConcurrentBuilds: 3,
		PollingFrequency: Duration(5 * time.Second), ImageRebuildFrequency: Duration(30 * time.Minute), LogLevel: "INFO",
		AgentName: "build-02", LogFormat: "json", LogFile: "-", MetricsAddress: ":9100", BuildTimeout: Duration(3 * time.Hour),
		ShutdownGrace: Duration(time.Minute), DeliverTimeout: Duration(2 * time.Minute), RequestTimeout: Duration(15 * time.Second),
		UploadTimeout: Duration(20 * time.Minute), Fsync: false, IDRange: IDRange{Base: 300000, Size: 65536, AllowConflicts: true},
		BuildLimits: BuildLimits{Memory: 8 << 30, MemorySwap: -1, Pids: 100, PidsSet: true, CPUs: 2, CPUWeight: 200, Tmp: 64 << 20, Log: 16 << 20, Disk: 30 << 30},
		PacmanCache: PacmanCache{Enabled: true, Dir: "/pc", MaxSize: 2 << 30, Sources: true}, BuilderPkgs: []string{"base-devel", "git", "cmake"},
		PacmanMirrors: []string{"https://m1/$repo/os/$arch", "https://m2/$repo/os/$arch"},
		Registries:    Registries{Insecure: []string{"r1:5000", "r2"}, CAFile: "/ca.pem", DockerConfig: "/dc.json"},
		BuildNetwork:  BuildNetwork{Mode: "isolated", OfflineBuild: true, Forward: []string{"127.0.0.1:9418", "localhost:80"}, Deny: []string{"10.0.0.0/8"}},
	}
	if diff := cmp.Diff(&want, c); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	// Every scalar key and list of strings has its variable: the test
	// above sets them all.
	for _, k := range configKeys(reflect.TypeFor[Config](), "") {
		if k.envOK {
			// api_key comes from its _FILE; mirrors is a deprecated alias
			// (TestConfigDeprecatedMirrors).
			if _, ok := env[EnvName(k.path)]; !ok && k.path != "api_key" && k.path != "mirrors" {
				t.Errorf("%s is not covered by this test", EnvName(k.path))
			}
		}
	}
}

func TestConfigEnvErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"VIETER_MAX_CONCURRENT_BUILDS": "0"}, "VIETER_MAX_CONCURRENT_BUILDS: max_concurrent_builds: must be ≥ 1 and ≤ 1024, got 0"},
		{map[string]string{"VIETER_MAX_CONCURRENT_BUILDS": "x"}, `VIETER_MAX_CONCURRENT_BUILDS: max_concurrent_builds: must be an integer, got "x"`},
		{map[string]string{"VIETER_POLLING_FREQUENCY": "often"}, `VIETER_POLLING_FREQUENCY: polling_frequency: "often" is not a duration (e.g. 90s, 5m, 1h30m)`},
		{map[string]string{"VIETER_BUILD_LIMITS_MEMORY": "1M"}, "VIETER_BUILD_LIMITS_MEMORY: build_limits.memory: must be at least 16MiB, got 1MiB"},
		{map[string]string{"VIETER_FSYNC": "yes please"}, `VIETER_FSYNC: fsync: must be true or false, got "yes please"`},
		{map[string]string{"VIETER_API_KEY": "a", "VIETER_API_KEY_FILE": "/x"}, "VIETER_API_KEY: set together with VIETER_API_KEY_FILE: use one"},
		{map[string]string{"VIETER_API_KEY_FILE": filepath.Join(dir, "missing")}, "re:^VIETER_API_KEY_FILE: open .*missing: no such file or directory$"},
		{map[string]string{"VIETER_API_KEY_FILE": empty}, "VIETER_API_KEY_FILE: " + empty + " is empty"},
		{map[string]string{"VIETER_LOG_LEVEL_FILE": empty}, "VIETER_LOG_LEVEL_FILE: " + empty + " is empty"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.env), func(t *testing.T) {
			_, err := Parse("agent.yaml", []byte(minimal), envMap(tt.env))
			if err == nil {
				t.Fatal("no error")
			}
			if re, ok := strings.CutPrefix(tt.want, "re:"); ok {
				if !regexp.MustCompile(re).MatchString(err.Error()) {
					t.Errorf("error %q does not match %q", err, re)
				}
			} else if err.Error() != tt.want {
				t.Errorf("error\n got %q\nwant %q", err, tt.want)
			}
		})
	}
	// Without a file, the environment alone is a configuration.
	c, err := Load("", envMap(map[string]string{"VIETER_ADDRESS": "https://v", "VIETER_API_KEY": "k"}))
	if err != nil || c.Address != "https://v" || c.APIKey.Reveal() != "k" {
		t.Errorf("environment only: %+v, %v", c, err)
	}
}

// TestConfigRedaction: the API key and registry passwords never show in
// fmt, JSON, YAML, slog or logrus output.
func TestConfigRedaction(t *testing.T) {
	c, err := Parse("agent.yaml", []byte(minimal+"registries:\n  credentials:\n    r: {username: u, password: hunter2-pw}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{testKey, "hunter2-pw"}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		outs = append(outs, fmt.Sprintf(verb, c), fmt.Sprintf(verb, *c), fmt.Sprintf(verb, c.APIKey))
	}
	outs = append(outs, c.String(), c.LogValue().String(), fmt.Sprint(c.Registries))
	js, _ := json.Marshal(c)
	outs = append(outs, string(js))
	for _, f := range []logrus.Formatter{&logrus.TextFormatter{DisableColors: true}, &logrus.JSONFormatter{}} {
		var buf bytes.Buffer
		l := logrus.New()
		l.SetOutput(&buf)
		l.SetFormatter(f)
		l.WithField("config", c).WithField("key", c.APIKey).WithField("plain", *c).Info("configuration loaded")
		outs = append(outs, buf.String())
	}
	for i, o := range outs {
		for _, s := range secrets {
			if strings.Contains(o, s) {
				t.Errorf("output %d shows a secret: %s", i, o)
			}
		}
	}
	if !strings.Contains(c.String(), redacted) || !strings.Contains(string(js), redacted) {
		t.Errorf("the mask is missing: %s / %s", c.String(), js)
	}
	if c.APIKey.Reveal() != testKey {
		t.Error("Reveal does not return the key")
	}
}

// TestConfigExample: agent.example.yaml parses, mentions every key, and
// its values are the defaults.
func TestConfigExample(t *testing.T) {
	data, err := os.ReadFile("../../agent.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("agent.example.yaml", data, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Address, want.APIKey = c.Address, c.APIKey
	want.BuildLimits.PidsSet = true // the example names the default
	if diff := cmp.Diff(&want, c); diff != "" {
		t.Errorf("example differs from the defaults (-defaults +example):\n%s", diff)
	}
	for _, k := range configKeys(reflect.TypeFor[Config](), "") {
		last := k.path[strings.LastIndex(k.path, ".")+1:]
		if !regexp.MustCompile(`(?m)^[#!\s-]*` + regexp.QuoteMeta(last) + `:`).Match(data) {
			t.Errorf("agent.example.yaml does not mention %s", k.path)
		}
	}
	// The commented-out examples are valid too.
	var un []string
	for _, line := range strings.Split(string(data), "\n") {
		if s, ok := strings.CutPrefix(line, "#! "); ok {
			line = s
		}
		un = append(un, line)
	}
	if _, err := Parse("agent.example.yaml", []byte(strings.Join(un, "\n")), noEnv); err != nil {
		t.Errorf("the example with its #! lines enabled: %v", err)
	}
}

// TestConfigDocs: docs/configuration.md documents every key and its
// variable.
func TestConfigDocs(t *testing.T) {
	data, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, k := range configKeys(reflect.TypeFor[Config](), "") {
		if !strings.Contains(doc, "`"+k.path+"`") {
			t.Errorf("docs/configuration.md does not document `%s`", k.path)
		}
		if k.envOK && !strings.Contains(doc, EnvName(k.path)) {
			t.Errorf("docs/configuration.md does not name %s", EnvName(k.path))
		}
	}
}

type keyInfo struct {
	path  string
	envOK bool
}

// configKeys lists the documented key paths of t: struct fields
// recursively, with "<host>" for map keys and "[]" for lists of mappings.
func configKeys(t reflect.Type, path string) []keyInfo {
	var out []keyInfo
	for name, f := range yamlFields(t) {
		p := join(path, name)
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct && ft != durationType:
			out = append(out, keyInfo{path: p})
			out = append(out, configKeys(ft, p)...)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			out = append(out, keyInfo{path: p})
			out = append(out, configKeys(ft.Elem(), p+".<host>")...)
		case ft.Kind() == reflect.Map:
			out = append(out, keyInfo{path: p})
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, keyInfo{path: p})
			out = append(out, configKeys(ft.Elem(), p+"[]")...)
		default:
			out = append(out, keyInfo{path: p, envOK: !strings.Contains(path, "<host>") && !strings.Contains(path, "[]")})
		}
	}
	return out
}

// FuzzConfig: the loader never panics, and a configuration it accepts
// never shows its API key.
func FuzzConfig(f *testing.F) {
	if data, err := os.ReadFile("../../agent.example.yaml"); err == nil {
		f.Add(string(data))
	}
	for _, s := range []string{minimal, "", "a: &a [*a, *a]", "x: !!binary aGk=", minimal + "build_limits: {memory: 9999999999T}",
		minimal + "polling_frequency: 99999999999999999", "registries: {mirrors: {a: [b]}, credentials: {h: {username: u, password: p}}}",
		"a: &a [1]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c]", "? [a]\n: b", "{address: 1, api_key: 2}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse("agent.yaml", []byte(s), noEnv)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "agent.yaml") {
				t.Errorf("error without the file name: %v", err)
			}
			return
		}
		if c.APIKey == "" || c.Address == "" || c.MaxConcurrentBuilds < 1 {
			t.Errorf("accepted an invalid configuration: %+v", c)
		}
		if k := c.APIKey.Reveal(); len(k) >= 4 && strings.Contains(c.String(), k) && !strings.Contains(redacted, k) {
			t.Errorf("String shows the key %q", k)
		}
	})
}

// TestSecretModeWarnings: a configuration file or a *_FILE secret that
// others may read is warned about; a 0600 one is not.
func TestSecretModeWarnings(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "agent.yaml")
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(conf, []byte("address: https://vieter.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("k\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		if k == "VIETER_API_KEY_FILE" {
			return key
		}
		return ""
	}
	for _, p := range []string{conf, key} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Load(conf, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(c.Warnings, "\n"); !strings.Contains(w, conf+" is readable") || !strings.Contains(w, key+" is readable") {
		t.Errorf("warnings:\n%s", w)
	}
	for _, p := range []string{conf, key} {
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if c, err = Load(conf, getenv); err != nil || len(c.Warnings) > 0 {
		t.Errorf("0600 files: %v %v", c.Warnings, err)
	}
}

// TestConfigDeprecatedMirrors: mirrors, the old name of pacman_mirrors, is
// still read (the commands warn: cmd/vagent's TestConfigDeprecatedMirrors),
// but not together with pacman_mirrors.
func TestConfigDeprecatedMirrors(t *testing.T) {
	const m = "https://m1/$repo/os/$arch"
	c, err := Parse("agent.yaml", []byte(minimal+"mirrors: ["+m+"]\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.PacmanMirrorList(); len(got) != 1 || got[0] != m {
		t.Errorf("pacman mirrors %v", got)
	}
	c, err = Parse("agent.yaml", []byte(minimal), envMap(map[string]string{"VIETER_MIRRORS": m}))
	if err != nil || len(c.PacmanMirrorList()) != 1 {
		t.Errorf("VIETER_MIRRORS: %v, %v", err, c)
	}
	_, err = Parse("agent.yaml", []byte(minimal+"mirrors: ["+m+"]\npacman_mirrors: ["+m+"]\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "mirrors: is the deprecated name of pacman_mirrors") {
		t.Errorf("both set: %v", err)
	}
}
