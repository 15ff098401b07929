package job

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/vieter"
)

// The build's calls to the server go through the agent's one
// vieter.Client (WithServer) with the build's retry policy (WithRetry).

// hasFile asks the repository whether file is in the job's arch-repo.
func (r *Runner) hasFile(ctx context.Context, repo, file string) (bool, error) {
	var found bool
	err := r.opts.retry.Do(ctx, func(ctx context.Context) error {
		var err error
		found, err = r.opts.server.HasFile(ctx, repo, r.opts.arch, file)
		return err
	})
	return found, err
}

// hasVersion is the skip check: is version of package name in the
// job's arch-repo?
func (r *Runner) hasVersion(ctx context.Context, repo, name, version string) (bool, error) {
	var found bool
	err := r.opts.retry.Do(ctx, func(ctx context.Context) error {
		var err error
		found, err = r.opts.server.HasVersion(ctx, repo, r.opts.arch, name, version)
		return err
	})
	return found, err
}

// publishFile publishes one package file and returns once the server
// confirmed it (vieter.Client.PublishConfirmed), saying how in the log.
func (r *Runner) publishFile(ctx context.Context, repo, name string, f *os.File, log io.Writer) error {
	pkgName, version, arch, err := vieter.ParsePackageFileName(name)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "+ vagent: publish %s to %s/%s/publish\n", name, r.opts.server.Address(), repo)
	conf, err := r.opts.server.PublishConfirmed(ctx, repo, r.opts.arch,
		vieter.Package{Name: pkgName, Version: version, Arch: arch, File: f, Size: fi.Size()}, r.opts.retry)
	if err != nil {
		r.opts.publishObserver("")
		fmt.Fprintf(log, "vagent: %s %s NOT confirmed in %s after %d attempt(s): %s\n", pkgName, version, repo, conf.Attempts, poll.OneLine(err.Error()))
		return err
	}
	r.opts.publishObserver(conf.By)
	how := "by the server's answer"
	if conf.By == vieter.ConfirmedByCheck {
		how = "by the repository after an answer that proved nothing"
	}
	fmt.Fprintf(log, "vagent: %s %s confirmed in %s (%s; %d attempt(s))\n", pkgName, version, repo, how, conf.Attempts)
	return nil
}
