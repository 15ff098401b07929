package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckEnviron(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want []string // substrings of the error, none for no error
	}{
		{[]string{"PATH=/bin", "VIETER_ADDRESS=http://x", "VIETER_API_KEY_FILE=/k", "VIETER_BUILD_LIMITS_MEMORY=1G", "VIETER_LOG_LEVEL=INFO"}, nil},
		{[]string{"VIETER_MAX_CONCURENT_BUILDS=2"}, []string{"VIETER_MAX_CONCURENT_BUILDS: unknown variable", "did you mean VIETER_MAX_CONCURRENT_BUILDS?"}},
		{[]string{"VIETER_APIKEY=x"}, []string{"did you mean VIETER_API_KEY?"}},
		{[]string{"VIETER_BUILD_LIMITS_MEMORY_FIEL=/x"}, []string{"did you mean VIETER_BUILD_LIMITS_MEMORY_FILE?"}},
		{[]string{"VIETER_SOMETHING_ELSE_ENTIRELY=1"}, []string{"VIETER_SOMETHING_ELSE_ENTIRELY: unknown variable (no configuration key reads it)"}},
		// Maps are set in the file only.
		{[]string{"VIETER_REGISTRIES_MIRRORS=x"}, []string{"VIETER_REGISTRIES_MIRRORS: unknown variable"}},
	} {
		err := checkEnviron(tc.env)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%v: %v", tc.env, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%v: no error", tc.env)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %q lacks %q", tc.env, err, w)
			}
		}
		if strings.Contains(tc.want[0], "no configuration key") && strings.Contains(err.Error(), "did you mean") {
			t.Errorf("%v: %q suggests a distant name", tc.env, err)
		}
	}
}

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
