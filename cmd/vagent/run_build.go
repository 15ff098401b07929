package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/job"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/sandbox"
)

func newBuildExecutor(ctx context.Context, cfg *config.Config, deps runDeps) (_ poll.Executor, _ func() error, retErr error) {
	var undo []func() error
	// Not the named result: an error return sets that to nil before the
	// deferred undo runs.
	cleanup := func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if retErr != nil {
			_ = cleanup()
		}
	}()
	// A host that cannot build takes no job: the probes of vagent check
	// first, before the image store or the sandbox is touched.
	popts, err := preflightOptions(deps.log, cfg.DataDir, cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := preflight(cfg.DataDir, popts, buildNeeds(networkMode(cfg), true, networkHintConfig)); err != nil {
		return nil, nil, err
	}
	ociOpts, err := registryOptions(cfg)
	if err != nil {
		return nil, nil, err
	}
	ociOpts = append(append(ociOpts, storeOptions()...), oci.WithLogger(deps.log), oci.WithProgress(deps.metrics.OCIProgress))
	store, err := oci.NewStore(filepath.Join(cfg.DataDir, "images"), ociOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("image store: %w", err)
	}
	// Builds run untrusted PKGBUILDs: a binary without seccomp support
	// refuses to run them (sandbox.ErrNoSeccomp) rather than run them with
	// less isolation; `make build` links libseccomp in.
	sb, _, err := openSandbox(deps.log, cfg.DataDir, cfg, true)
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, sb.Close)
	warnUnlimited(deps.log, sb)
	// An agent that cannot give its builds their network takes no job.
	if networkMode(cfg) == sandbox.NetworkIsolated {
		if err := sb.CheckNetwork(ctx); err != nil {
			return nil, nil, &exitError{code: exitUnavailable, err: fmt.Errorf("build_network.mode isolated: %w (`vagent check` tells more; build_network.mode: host runs builds unisolated)", err)}
		}
	}
	bm, err := builder.New(store, sb, filepath.Join(cfg.DataDir, "builders"),
		append(builderImageOptions(cfg), builder.WithLogger(deps.log), builder.WithPrepareObserver(deps.metrics.ImagePrepared))...)
	if err != nil {
		return nil, nil, fmt.Errorf("builder images: %w", err)
	}
	undo = append(undo, bm.Close)
	if err := deps.metrics.WatchImages(func() (int, time.Time, error) {
		infos, err := bm.List()
		if err != nil {
			return 0, time.Time{}, err
		}
		var oldest time.Time
		for _, in := range infos {
			if oldest.IsZero() || in.Created.Before(oldest) {
				oldest = in.Created
			}
		}
		return len(infos), oldest, nil
	}); err != nil {
		return nil, nil, err
	}
	// The configured pacman_repos are in the builder image (BuilderOptions):
	// a build adds only its job's repository (package pacman).
	b, err := job.New(sb, job.BuilderImages(bm), filepath.Join(cfg.DataDir, "build"),
		append(jobNetworkOptions(cfg),
			job.WithServer(deps.server),
			job.WithPublishObserver(deps.metrics.PackagePublished),
			job.WithArch(cfg.Arch),
			job.WithLimits(sandboxLimits(cfg)),
			job.WithCacheDir(pacmanCacheDir(cfg)),
			job.WithCacheMaxSize(int64(cfg.PacmanCache.MaxSize)),
			job.WithSourceCache(cfg.PacmanCache.Sources),
			job.WithLogger(deps.log))...)
	if err != nil {
		return nil, nil, fmt.Errorf("builds: %w", err)
	}
	return b, cleanup, nil
}
