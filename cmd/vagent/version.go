package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Stamped at build time with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

func init() {
	register(&command{name: "version", summary: "print version, commit, Go version and build features", run: runVersion})
}

func runVersion(_ context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 {
		return usageError("version takes no arguments")
	}
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
	fmt.Fprintf(env.stdout, "vagent %s\ncommit: %s\ngo: %s %s/%s\nfeatures: %s\n",
		version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, features)
	return nil
}
