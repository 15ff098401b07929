package poll

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/vieter"
)

// The test binary re-executes itself as an agent process for the crash
// tests and the idle benchmark. The parent passes its settings in the
// environment.
const (
	childEnv         = "VAGENT_POLL_TEST_CHILD" // executor mode: instant, block
	childAddrEnv     = "VAGENT_POLL_TEST_ADDR"
	childDirEnv      = "VAGENT_POLL_TEST_DIR"
	childIntervalEnv = "VAGENT_POLL_TEST_INTERVAL"
	childGraceEnv    = "VAGENT_POLL_TEST_GRACE" // default 5m
)

func childMain() int {
	exec := instant
	if os.Getenv(childEnv) == "block" {
		exec = ExecutorFunc(func(ctx context.Context, j Job, log io.Writer) (Outcome, error) {
			ReportHeader(ctx, "builder digest", "sha256:crash")
			fmt.Fprintf(log, "started target %d\n", j.TargetID)
			<-ctx.Done()
			return Outcome{ExitCode: 1}, nil
		})
	}
	interval, err := time.ParseDuration(os.Getenv(childIntervalEnv))
	if err != nil {
		interval = 50 * time.Millisecond
	}
	c, err := vieter.NewClient(os.Getenv(childAddrEnv), testKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	grace, err := time.ParseDuration(os.Getenv(childGraceEnv))
	if err != nil {
		grace = 5 * time.Minute
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	a, err := New(c, exec, WithArch(testArch), WithDataDir(os.Getenv(childDirEnv)), WithSlots(3), WithAgentName("child"),
		WithPollInterval(interval), WithBackoff(5*time.Millisecond, 50*time.Millisecond), WithLogger(log), WithGracePeriod(grace))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// As the CLI does: the first signal stops gracefully, the second
	// cancels the builds, the third exits.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sigs
		cancel()
		<-sigs
		a.Abort()
		<-sigs
		os.Exit(3)
	}()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startChild runs the test binary as an agent process.
func startChild(t testing.TB, mode, addr, dir string, interval time.Duration) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childAddrEnv+"="+addr, childDirEnv+"="+dir,
		childIntervalEnv+"="+interval.String())
	cmd.Stderr = os.Stderr
	if testing.Verbose() == false {
		cmd.Stderr = io.Discard
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}
