package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/sandbox"
)

var pkgRE = regexp.MustCompile(`^([a-z0-9@._+-]+/)?[a-z0-9@._+-]+$`)

// validate checks the values that decoding could not.
func (l *loader) validate(c *Config) {
	// where locates key, or the nearest enclosing key that was set.
	where := func(key string) string {
		for key != "" {
			if w, ok := l.where[key]; ok {
				return w
			}
			i := strings.LastIndexAny(key, ".[")
			if i < 0 {
				break
			}
			key = key[:i]
		}
		return l.file
	}
	check := func(ok bool, key, format string, args ...any) bool {
		if !ok {
			l.fail(where(key), key, format, args...)
		}
		return ok
	}
	if check(c.Address != "", "address", "required (the Vieter server's URL; or %s)", EnvName("address")) {
		u, err := url.Parse(c.Address)
		if check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "", "address", "must be an http or https URL, got %q", excerptValue(c.Address)) {
			check(u.User == nil, "address", "must not contain credentials")
			check(u.RawQuery == "" && u.Fragment == "", "address", "must not have a query or fragment")
		}
	}
	check(c.APIKey != "", "api_key", "required (or %s, or %s_FILE)", EnvName("api_key"), EnvName("api_key"))
	check(!strings.ContainsAny(c.APIKey.Reveal(), "\r\n\x00"), "api_key", "contains a line break")
	check(pacman.ValidateArch(c.Arch) == nil, "arch", "must be a Pacman architecture name such as x86_64, got %q", excerptValue(c.Arch))
	check(filepath.IsAbs(c.DataDir), "data_dir", "must be an absolute path, got %q", excerptValue(c.DataDir))
	check(c.MaxConcurrentBuilds >= 1 && c.MaxConcurrentBuilds <= 1024, "max_concurrent_builds", "must be ≥ 1 and ≤ 1024, got %d", c.MaxConcurrentBuilds)
	for _, d := range []struct {
		key string
		v   Duration
		min time.Duration
	}{
		{"polling_frequency", c.PollingFrequency, time.Second},
		{"image_rebuild_frequency", c.ImageRebuildFrequency, time.Minute},
		{"build_timeout", c.BuildTimeout, time.Second},
		{"deliver_timeout", c.DeliverTimeout, time.Second},
		{"request_timeout", c.RequestTimeout, time.Second},
		{"upload_timeout", c.UploadTimeout, time.Second},
	} {
		check(d.v.D() >= d.min, d.key, "must be at least %v, got %v", d.min, d.v)
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		check(false, "log_level", "%v", err)
	}
	if err := checkAgentName(c.AgentName); err != nil {
		check(false, "agent_name", "%v", err)
	}
	check(c.LogFormat == "text" || c.LogFormat == "json", "log_format", "must be text or json, got %q", excerptValue(c.LogFormat))
	check(c.LogFile == "" || c.LogFile == "-" || filepath.IsAbs(c.LogFile), "log_file", "must be an absolute path or -, got %q", excerptValue(c.LogFile))
	if c.MetricsAddress != "" {
		_, port, err := net.SplitHostPort(c.MetricsAddress)
		p, perr := strconv.ParseUint(port, 10, 16)
		check(err == nil && perr == nil && (p > 0 || port == "0"), "metrics_address", "must be host:port (e.g. 127.0.0.1:9100 or :9100), got %q", excerptValue(c.MetricsAddress))
	}
	if _, set := l.where["id_range.base"]; set {
		check(c.IDRange.Base >= 1, "id_range.base", "must be ≥ 1 (host id 0 is root), got %d; leave it out to let vagent pick a free range", c.IDRange.Base)
	}
	check(c.IDRange.Size >= 65536, "id_range.size", "must be ≥ 65536 (a build needs every 16-bit id), got %d", c.IDRange.Size)
	check(uint64(c.IDRange.Base)+uint64(c.IDRange.Size) <= math.MaxUint32, "id_range.size", "base + size must be < 2^32")
	bl := c.BuildLimits
	check(bl.Memory >= 0, "build_limits.memory", "must be a size or 0 (no limit), got %v", bl.Memory)
	check(bl.Memory == 0 || bl.Memory >= 16<<20, "build_limits.memory", "must be at least 16MiB, got %v", bl.Memory)
	check(bl.MemorySwap >= -1, "build_limits.memory_swap", "must be a size, 0 or -1")
	check(bl.MemorySwap == 0 || bl.Memory > 0, "build_limits.memory_swap", "needs build_limits.memory")
	check(bl.MemorySwap <= 0 || bl.MemorySwap >= bl.Memory, "build_limits.memory_swap", "is memory plus swap: must be ≥ memory (%v), got %v", bl.Memory, bl.MemorySwap)
	check(bl.Pids >= 0, "build_limits.pids", "must be ≥ 0 (0: no limit), got %d", bl.Pids)
	check(bl.CPUs >= 0 && !math.IsNaN(bl.CPUs) && !math.IsInf(bl.CPUs, 0) && bl.CPUs <= 1<<16, "build_limits.cpus", "must be a number of CPUs ≥ 0 (0: no limit), got %v", bl.CPUs)
	check(bl.CPUWeight <= 10000, "build_limits.cpu_weight", "must be 1–10000 or 0 (the default weight), got %d", bl.CPUWeight)
	check(bl.Tmp >= 1<<20, "build_limits.tmp", "must be a size of at least 1MiB, got %v", bl.Tmp)
	check(bl.Log >= 4<<10, "build_limits.log", "must be a size of at least 4KiB, got %v", bl.Log)
	check(bl.Disk == 0 || bl.Disk >= 64<<20, "build_limits.disk", "must be a size of at least 64MiB or 0 (no limit), got %v", bl.Disk)
	check(c.PacmanCache.MaxSize >= 0, "pacman_cache.max_size", "must be a size or 0 (no bound), got %v", c.PacmanCache.MaxSize)
	check(c.PacmanCache.Dir == "" || filepath.IsAbs(c.PacmanCache.Dir), "pacman_cache.dir", "must be an absolute path, got %q", excerptValue(c.PacmanCache.Dir))
	for i, p := range c.BuilderPkgs {
		check(pkgRE.MatchString(p), fmt.Sprintf("builder_packages[%d]", i), "not a package name: %q", excerptValue(p))
	}
	for i, m := range c.Mirrors {
		check(pacman.ValidateServer(m) == nil, fmt.Sprintf("mirrors[%d]", i), "must be an http, https or file URL, got %q", excerptValue(m))
	}
	check(len(c.Mirrors) == 0 || len(c.PacmanMirrors) == 0, "mirrors", "is the deprecated name of pacman_mirrors: set only pacman_mirrors")
	for i, m := range c.PacmanMirrors {
		check(pacman.ValidateServer(m) == nil, fmt.Sprintf("pacman_mirrors[%d]", i), "must be an http, https or file URL, got %q", excerptValue(m))
	}
	names := map[string]bool{}
	for i, r := range c.PacmanRepos {
		key := fmt.Sprintf("pacman_repos[%d]", i)
		check(pacman.ValidateName(r.Name) == nil, key+".name", "must be a repository name (a letter or digit, then letters, digits and ._+-; not options), got %q", excerptValue(r.Name))
		check(!names[r.Name], key+".name", "%q is listed twice", excerptValue(r.Name))
		names[r.Name] = true
		check(len(r.Servers) > 0, key+".servers", "needs at least one server")
		for j, s := range r.Servers {
			check(pacman.ValidateServer(s) == nil, fmt.Sprintf("%s.servers[%d]", key, j), "must be an http, https or file URL, got %q", excerptValue(s))
		}
		_, err := pacman.NormalizeSigLevel(r.SigLevel)
		check(err == nil, key+".sig_level", "must be Pacman SigLevel words (e.g. Optional TrustAll), got %q", excerptValue(r.SigLevel))
	}
	bn := c.BuildNetwork
	mode := bn.Mode
	nm, err := sandbox.ParseNetworkMode(mode)
	modeOK := err == nil
	check(modeOK, "build_network.mode", "must be isolated, host or none, got %q", excerptValue(mode))
	for i, f := range bn.Forward {
		_, _, err := sandbox.ParseForward(f)
		check(err == nil, fmt.Sprintf("build_network.forward[%d]", i), "must be host:port (e.g. 127.0.0.1:9418), got %q", excerptValue(f))
	}
	for i, d := range bn.Deny {
		_, err := parseDeny(d)
		check(err == nil, fmt.Sprintf("build_network.deny[%d]", i), "must be an address or a CIDR prefix (e.g. 10.0.0.0/8), got %q", excerptValue(d))
	}
	if modeOK {
		check(!bn.OfflineBuild || nm == sandbox.NetworkIsolated, "build_network.offline_build", "needs build_network.mode: isolated (the agent cuts an isolated network), not %s", mode)
		if nm != sandbox.NetworkIsolated && (len(bn.Forward) > 0 || len(bn.Deny) > 0) {
			l.warnings = append(l.warnings, fmt.Sprintf("build_network.forward and build_network.deny apply to the isolated network only: ignored with mode %s", mode))
		}
		if nm == sandbox.NetworkHost {
			l.warnings = append(l.warnings, "build_network.mode: host is unsafe: builds share the host's network namespace, "+
				"so they reach its loopback services (the agent's metrics, a local registry or Vieter server), its abstract unix sockets, "+
				"link-local addresses (cloud metadata), and can bind its ports; use isolated (the default)")
		}
	}
	rg := c.Registries
	for host, ms := range rg.Mirrors {
		check(validHost(host), "registries.mirrors."+host, "not a registry host")
		for i, m := range ms {
			check(m != "" && !strings.ContainsAny(m, " \t\r\n"), fmt.Sprintf("registries.mirrors.%s[%d]", host, i), "not a mirror: %q", excerptValue(m))
		}
	}
	for i, h := range rg.Insecure {
		check(validHost(h), fmt.Sprintf("registries.insecure[%d]", i), "not a registry host: %q", excerptValue(h))
	}
	check(rg.CAFile == "" || filepath.IsAbs(rg.CAFile), "registries.ca_file", "must be an absolute path")
	check(rg.DockerConfig == "" || filepath.IsAbs(rg.DockerConfig), "registries.docker_config", "must be an absolute path")
	for host, cr := range rg.Credentials {
		key := "registries.credentials." + host
		check(validHost(host), key, "not a registry host")
		check(cr.Username != "", key+".username", "required")
		check((cr.Password == "") != (cr.PasswordFile == ""), key, "needs password or password_file (one of them)")
		check(cr.PasswordFile == "" || filepath.IsAbs(cr.PasswordFile), key+".password_file", "must be an absolute path")
	}
}

// parseDeny parses a build_network.deny entry: a CIDR prefix, or an
// address (the prefix of that one address).
func parseDeny(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR prefix nor an address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func validHost(h string) bool {
	if h == "" || strings.ContainsAny(h, "/ \t\r\n@") {
		return false
	}
	host := h
	if hh, port, err := net.SplitHostPort(h); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return false
		}
		host = hh
	}
	return host != ""
}

// ParseLogLevel parses log_level: FATAL, ERROR, WARN, INFO or DEBUG, in
// any case (WARNING is WARN). It returns the level in upper case.
func ParseLogLevel(s string) (string, error) {
	switch u := strings.ToUpper(strings.TrimSpace(s)); u {
	case "FATAL", "ERROR", "WARN", "INFO", "DEBUG":
		return u, nil
	case "WARNING":
		return "WARN", nil
	}
	return "", fmt.Errorf("must be FATAL, ERROR, WARN, INFO or DEBUG, got %q", excerptValue(s))
}

// maxAgentName bounds agent_name (poll's bound of names in log headers).
const maxAgentName = 64

// checkAgentName checks an agent_name: printable, at most 64 bytes.
func checkAgentName(s string) error {
	if s == "" || strings.TrimSpace(s) != s || len(s) > maxAgentName || !utf8.ValidString(s) ||
		strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("must be 1-%d printable characters without leading or trailing space, got %q", maxAgentName, excerptValue(s))
	}
	return nil
}
