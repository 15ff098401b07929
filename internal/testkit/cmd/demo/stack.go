package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/testkit"
)

// serveStack runs a testkit.DemoStack until ctx is done (Ctrl-C), in a
// directory of its own that it removes unless keep.
func serveStack(ctx context.Context, vagent string, keep bool, out io.Writer) error {
	log := logrus.New()
	log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	dir, err := os.MkdirTemp("", "vagent-demo-stack-")
	if err != nil {
		return err
	}
	// Builds reach the data dir as mapped users: the path must be searchable.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if keep {
		defer log.Infof("demo directory kept: %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	d, err := testkit.StartDemoStack(ctx, vagent, dir, log)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Guide(out); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(out, "\nstopping the test stack")
	return nil
}
