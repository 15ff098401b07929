// Command vieter-testserver runs the Vieter-compatible test server of
// internal/vieterserver, for `make demo` and manual experiments. It is not
// a Vieter server: state is in memory (and mirrored to -data).
//
//	vieter-testserver -addr 127.0.0.1:0 -api-key KEY -data DIR \
//	    -target '{"kind":"url","url":"http://…/PKGBUILD","repo":"demo"}' -enqueue x86_64 \
//	    -builder-repo deps
//
// -builder-repo NAME publishes empty base-devel and git packages into the
// repository NAME, so that a builder made from an image without Arch
// repositories (the test images) can install them: point the agent's
// pacman_repos (or `vagent build --repo-url ADDR/NAME`) at it. `make
// demo-stack` starts it with a registry and prints how to use both.
//
// It prints "listening on http://HOST:PORT" on stdout once it accepts
// connections, and stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/vieterserver"
)

type targetFlags []vieterserver.Target

func (t *targetFlags) String() string { return fmt.Sprint(len(*t), " targets") }
func (t *targetFlags) Set(v string) error {
	var tg vieterserver.Target
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tg); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	*t = append(*t, tg)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vieter-testserver:", err)
		os.Exit(1)
	}
}

func run() error {
	var targets targetFlags
	addr := flag.String("addr", "127.0.0.1:8000", "listen address (port 0 picks a free port)")
	key := flag.String("api-key", "test-key", "API key expected in X-Api-Key")
	data := flag.String("data", "", "directory to mirror logs and repositories to (default: memory only)")
	arch := flag.String("default-arch", "x86_64", "default architecture (receives arch=any packages)")
	enqueue := flag.String("enqueue", "", "queue one job per -target for these comma-separated arches at start")
	emptyDB := flag.Bool("empty-db", false, "serve an empty database for repositories without packages (the real server answers 404)")
	faultRate := flag.Float64("fault-rate", 0, "fraction of API requests that fail (5xx, dropped connection, malformed JSON)")
	seed := flag.Uint64("seed", 1, "seed for -fault-rate")
	verbose := flag.Bool("v", false, "log every request")
	builderRepo := flag.String("builder-repo", "", "publish empty base-devel and git packages into this repository (for builders of images without Arch repositories)")
	flag.Var(&targets, "target", "add a target, as JSON (kind, url, branch, path, repo, arches, base_image, timeout); repeatable")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		return errors.New("unexpected arguments")
	}

	log := logrus.New()
	log.SetOutput(os.Stderr)
	if *verbose {
		log.SetLevel(logrus.DebugLevel)
	}
	opts := []vieterserver.Option{vieterserver.WithAPIKey(*key), vieterserver.WithDefaultArch(*arch),
		vieterserver.WithEmptyRepoDB(*emptyDB), vieterserver.WithLogger(log)}
	if *data != "" {
		opts = append(opts, vieterserver.WithDataDir(*data))
	}
	if *faultRate > 0 {
		opts = append(opts, vieterserver.WithFaults(vieterserver.FaultConfig{Rate: *faultRate, Seed: *seed}))
	}
	if *verbose {
		opts = append(opts, vieterserver.WithHook(func(route string, r *http.Request) {
			log.WithFields(logrus.Fields{"route": route, "method": r.Method, "path": r.URL.Path}).Debug("request")
		}))
	}
	srv, err := vieterserver.New(opts...)
	if err != nil {
		return err
	}
	if *builderRepo != "" {
		if err := srv.PublishMetaPackages(*builderRepo, "base-devel", "git"); err != nil {
			return fmt.Errorf("-builder-repo: %w", err)
		}
	}
	for _, t := range targets {
		id := srv.AddTarget(t)
		for _, a := range strings.Split(*enqueue, ",") {
			if a = strings.TrimSpace(a); a != "" {
				if err := srv.Enqueue(id, a, false); err != nil {
					return err
				}
			}
		}
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("listening on http://%s\n", ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}
