package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnknownEnvIsConfigError: a misspelt VIETER_* variable stops every
// command that reads the configuration with exit status 78; a short API
// key is warned about.
func TestUnknownEnvIsConfigError(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("address: http://x\napi_key: short\ndata_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI("status", "--config", cfg)
	if code != 0 || !strings.Contains(errOut, "api_key has 5 characters: a key shorter than 16") {
		t.Errorf("short key: exit %d, stderr %q", code, errOut)
	}
	t.Setenv("VIETER_MAX_CONCURENT_BUILDS", "2")
	for _, args := range [][]string{{"run", cfg}, {"status", "--config", cfg}, {"builder", "ls", "--config", cfg}} {
		code, _, errOut := runCLI(args...)
		if code != exitConfig || !strings.Contains(errOut, "VIETER_MAX_CONCURENT_BUILDS: unknown variable") ||
			!strings.Contains(errOut, "did you mean VIETER_MAX_CONCURRENT_BUILDS?") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// TestConfigFlag: the commands that take --config use the agent's
// data_dir unless --data-dir is given, and an invalid configuration is
// exit status 78 in each.
func TestConfigFlag(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "agent-data")
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(minimal+"data_dir: "+data+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(minimal+"pacman_mirors: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"builder", "ls"}, {"builder", "prune"}, {"builder", "rm", "x:1"}, {"status"}} {
		code, _, errOut := runCLI(append(args, "--config", cfg)...)
		if code != 1 || !strings.Contains(errOut, "no such data dir: "+data) {
			t.Errorf("%v: exit %d, stderr %q; want the configuration's data_dir", args, code, errOut)
		}
		if code, _, errOut := runCLI(append(args, "--config", bad)...); code != exitConfig || !strings.Contains(errOut, "pacman_mirors: unknown key") {
			t.Errorf("%v --config bad.yaml: exit %d, stderr %q", args, code, errOut)
		}
	}
	for _, args := range [][]string{{"build", "--config", bad, "x"}, {"builder", "build", "--config", bad, "x:1"}} {
		if code, _, errOut := runCLI(args...); code != exitConfig || !strings.Contains(errOut, "pacman_mirors: unknown key") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI("builder", "ls", "--config", cfg); code != 0 || !strings.HasPrefix(out, "BASE") {
		t.Errorf("builder ls: exit %d: %s%s", code, out, errOut)
	}
	// Without address and api_key: enough for every command but run.
	noServer := filepath.Join(dir, "packager.yaml")
	if err := os.WriteFile(noServer, []byte("data_dir: "+data+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI("builder", "ls", "--config", noServer); code != 0 || strings.Contains(errOut, "api_key") {
		t.Errorf("builder ls without the server's keys: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runCLI("run", noServer); code != exitConfig || !strings.Contains(errOut, "address: required") || !strings.Contains(errOut, "api_key: required") {
		t.Errorf("run without the server's keys: exit %d, stderr %q", code, errOut)
	}
	other := filepath.Join(dir, "other")
	if code, _, errOut := runCLI("builder", "ls", "--config", cfg, "--data-dir", other); code != 1 || !strings.Contains(errOut, "no such data dir: "+other) {
		t.Errorf("--data-dir does not win over data_dir: exit %d, stderr %q", code, errOut)
	}
}
