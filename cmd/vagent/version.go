package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Stamped at build time with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

func newVersionCmd(env *cliEnv) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print version, commit, Go version and build features",
		Long:  "Print version, commit, Go version and build features (as `vagent --version` does).",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprint(env.stdout, versionText())
			return nil
		},
	}
}

// features are the build's tags, or whether cgo is on.
func features() string {
	features := "nocgo"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-tags" && s.Value != "" {
				features = s.Value
			}
			if s.Key == "CGO_ENABLED" && s.Value == "1" && features == "nocgo" {
				features = "cgo"
			}
		}
	}
	return features
}

func versionText() string {
	return fmt.Sprintf("vagent %s\ncommit: %s\ngo: %s %s/%s\nfeatures: %s\n",
		version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, features())
}
