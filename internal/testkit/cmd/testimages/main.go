// Command testimages builds the test images that vagent's tests and
// benchmarks use, if they are not cached yet, and prints the OCI layout
// directory of the Arch-like image. `make testimages` runs it before the
// tests, since building takes minutes (debootstrap) and needs root.
//
// Usage:
//
//	go run ./internal/testkit/cmd/testimages [-cache DIR] [-prune] [-v]
//
// The cache directory defaults to $VAGENT_TESTIMAGE_CACHE or
// /var/cache/vagent/testimages.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/vieter-v/vagent/internal/testkit"
)

func main() {
	cache := flag.String("cache", testkit.CacheDir(), "cache directory")
	verbose := flag.Bool("v", false, "show debootstrap's output")
	prune := flag.Bool("prune", false, "remove cached images of other (older) recipes")
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	if *verbose {
		log.SetLevel(logrus.DebugLevel)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, dir, err := testkit.ArchLikeImage(ctx, testkit.WithCacheDir(*cache), testkit.WithLogger(log))
	if err != nil {
		fmt.Fprintf(os.Stderr, "testimages: %v\n", err)
		os.Exit(1)
	}
	if *prune {
		removed, err := testkit.PruneArchLike(*cache)
		for _, r := range removed {
			log.WithField("dir", r).Info("removed an image of another recipe")
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "testimages: %v\n", err)
			os.Exit(1)
		}
	}
	fmt.Println(dir)
}
