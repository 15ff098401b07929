package config

import (
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
		err := CheckEnviron(tc.env)
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
