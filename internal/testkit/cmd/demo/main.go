// Command demo runs vagent end to end on one machine, with nothing from the
// network but Debian packages: it starts a local registry with the Arch-like
// base image, a Vieter-compatible test server with two build targets, and
// `vagent run` against them.
//
// With -stack it starts only the registry and the test server (with a
// repository holding base-devel and git, and one queued job), writes an
// agent.yaml and a sample PKGBUILD, prints ready-to-paste `vagent build`
// and `vagent run` command lines, and runs until Ctrl-C (make demo-stack). Two packages build at once; then a third whose
// PKGBUILD depends on the first is built, pacman installing that dependency
// from the server's repository. The demo stops the agent with SIGTERM (its
// graceful shutdown), prints the logs the server received and what the
// repository holds, removes everything it started and exits non-zero if any
// build failed.
//
//	make demo          # or: go run ./internal/testkit/cmd/demo -vagent bin/vagent
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vieter-v/vagent/internal/testkit"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("vagent", "bin/vagent", "the vagent binary to run")
	keep := flag.Bool("keep", false, "keep the demo's directory (data dir, logs) instead of removing it")
	timeout := flag.Duration("timeout", 30*time.Minute, "give up after this long")
	stackOnly := flag.Bool("stack", false, "start only the registry and the test server, print how to use them, and run until Ctrl-C")
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("needs root (containers, overlay mounts): run `sudo make demo`")
	}
	vagent, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(vagent); err != nil {
		return fmt.Errorf("%w (run `make build` first)", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *stackOnly {
		return serveStack(ctx, vagent, *keep, os.Stdout)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	log := logrus.New()
	log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	dir, err := os.MkdirTemp("", "vagent-demo-")
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if *keep {
		log.Infof("demo directory: %s (kept)", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	st, err := testkit.StartStack(ctx, filepath.Join(dir, "stack"), log)
	if err != nil {
		return err
	}
	defer st.Close()

	const arch = "x86_64"
	if _, err := st.AddURLTarget("hello", "demo", arch, testkit.DemoPKGBUILD("vagent-demo-hello", "1.0")); err != nil {
		return err
	}
	if _, err := st.AddURLTarget("lib", "demo", arch, testkit.DemoPKGBUILD("vagent-demo-lib", "2.1")); err != nil {
		return err
	}
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(st.AgentYAML(filepath.Join(dir, "data"), arch, 2, 2*time.Second)), 0o600); err != nil {
		return err
	}
	log.Infof("starting: %s run %s", vagent, cfg)
	cmd := exec.Command(vagent, "run", cfg)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopAgent := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			return errors.New("agent did not stop within 2 minutes of SIGTERM")
		}
	}

	wait := func(n int) error {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		go func() {
			select {
			case err := <-exited:
				exited <- err
				wcancel()
			case <-wctx.Done():
			}
		}()
		_, err := st.WaitLogs(wctx, n)
		return err
	}
	if err := wait(2); err != nil {
		_ = stopAgent()
		return err
	}
	log.Info("demo: both packages built; queueing one that depends on vagent-demo-lib")
	if _, err := st.AddURLTarget("app", "demo", arch, testkit.DemoPKGBUILD("vagent-demo-app", "0.3", "vagent-demo-lib")); err != nil {
		_ = stopAgent()
		return err
	}
	if err := wait(3); err != nil {
		_ = stopAgent()
		return err
	}
	log.Info("demo: stopping the agent with SIGTERM")
	if err := stopAgent(); err != nil {
		return fmt.Errorf("agent exit: %w", err)
	}

	failed := 0
	fmt.Println("\n== logs received by the server ==")
	for _, l := range st.Server.Logs() {
		t, _ := st.Server.Target(l.TargetID)
		fmt.Printf("target %d (%s): exit code %d, %s, %d bytes\n", l.TargetID, t.URL, l.ExitCode, l.EndTime.Sub(l.StartTime), len(l.Content))
		if l.ExitCode != 0 {
			failed++
			fmt.Printf("---- log of target %d ----\n%s\n", l.TargetID, l.Content)
		}
	}
	fmt.Println("\n== repository demo/" + arch + " ==")
	for _, p := range st.Server.Packages("demo", arch) {
		fmt.Printf("%s %s (%s)\n", p.Info.Name, p.Info.Version, p.Filename)
	}
	if n := len(st.Server.Packages("demo", arch)); n != 3 {
		return fmt.Errorf("repository holds %d packages, want 3", n)
	}
	if failed > 0 {
		return fmt.Errorf("%d builds failed", failed)
	}
	fmt.Println("\ndemo: ok")
	return nil
}
