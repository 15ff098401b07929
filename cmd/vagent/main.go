// Command vagent is a daemonless, rootless build agent for Vieter.
//
// The command is a thin layer: it parses flags and configuration, sets up
// logging and a signal context, and wires the vieter, poll, job, builder,
// oci and sandbox packages together. The libcontainer init re-exec hook is
// package sandbox's own init function: importing sandbox is all it takes.
//
// The command line follows the conventions of cobra-based tools (crane,
// podman, kubectl): flags anywhere, `vagent help CMD`, `--version`, help
// on standard output, shell completion, and the exit statuses of
// exitStatuses (documented in docs/cli.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// cliEnv carries what every command needs from the process.
type cliEnv struct {
	stdin  *os.File // a terminal for vagent build --inspect
	stdout io.Writer
	stderr io.Writer
	log    *logrus.Logger
	// getenv reads the process environment (os.Getenv; a test may give
	// a command an environment of its own).
	getenv func(string) string
}

// commands are the constructors of vagent's subcommands, all of them, in
// one place (`vagent help` lists them sorted by name). run1 builds a fresh
// command tree on each call.
var commands = []func(env *cliEnv) *cobra.Command{
	newRunCmd,
	newBuildCmd,
	newCheckCmd,
	newStatusCmd,
	newLogsCmd,
	newImageCmd,
	newBuilderCmd,
	newVersionCmd,
}

// Exit statuses. A build's own status passes through `vagent build`.
const (
	exitFailure = 1
	exitUsage   = 2
	// exitConfig is the exit status for an invalid configuration
	// (EX_CONFIG): systemd's RestartPreventExitStatus=78 keeps such an
	// agent stopped.
	exitConfig = 78
	// exitSignalled: `vagent run` got a third signal and exited without
	// draining.
	exitSignalled = 130
	// exitStdoutClosed: standard output was closed (EPIPE), as a shell
	// reports a command killed by SIGPIPE (128+13).
	exitStdoutClosed = 141
)

// errStdoutClosed is the cause of a command's cancellation when its
// standard output was closed.
var errStdoutClosed = errors.New("standard output closed")

// closedStdout is standard output: the first write that fails with EPIPE
// calls onClose (which cancels the command); later writes fail at once.
type closedStdout struct {
	w       io.Writer
	onClose func()
	closed  atomic.Bool
}

// Unwrap returns the standard output itself (a terminal for --inspect).
func (c *closedStdout) Unwrap() io.Writer { return c.w }

func (c *closedStdout) Write(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, errStdoutClosed
	}
	n, err := c.w.Write(p)
	if errors.Is(err, syscall.EPIPE) && !c.closed.Swap(true) {
		c.onClose()
	}
	return n, err
}

// exitStatuses documents every exit status; docs/cli.md has the same
// table (TestExitStatusesDocumented).
var exitStatuses = []struct {
	code    string
	meaning string
}{
	{"0", "success"},
	{"1", "failure: the command could not do what was asked (an unreachable registry, a missing data dir, a check that found something missing, no such log; `vagent build`: the build made no package, or it could not be written to --out)"},
	{"2", "usage error: unknown command or flag, wrong arguments, invalid flag value"},
	{"69", "this host cannot run builds (what `vagent check` reports missing; EX_UNAVAILABLE): `vagent run` took no job, `vagent build` and `vagent builder build` pulled nothing; for an ordinary user, also any command that needs rootless mode when it is not available (no subordinate ids, no newuidmap, user namespaces disabled)"},
	{"78", "invalid configuration (agent.yaml or VIETER_* variables; EX_CONFIG, for RestartPreventExitStatus=78)"},
	{"124, 125, 130, 137", "`vagent build`: the build timed out, could not be set up, was cancelled, or was killed"},
	{"other", "`vagent build`: the exit status of makepkg"},
	{"130", "`vagent run`: a third SIGINT/SIGTERM ended it at once, without draining"},
	{"141", "standard output was closed (its reader, such as `head`, went away): the command stopped as if cancelled, cleaning up"},
}

// exitError makes a command exit with a given status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// usageError reports bad command-line input (exit status 2); the
// command's usage is printed with it.
func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

func main() { os.Exit(run1(os.Args[1:], os.Stdout, os.Stderr)) }

// run1 runs vagent with args and returns the exit status.
func run1(args []string, stdout, stderr io.Writer) int {
	log := logrus.New()
	log.SetOutput(stderr)
	log.SetLevel(logrus.InfoLevel)
	if lvl := os.Getenv("VIETER_LOG_LEVEL"); lvl != "" {
		if l, err := logrus.ParseLevel(lvl); err == nil {
			log.SetLevel(l)
		}
	}
	// An ordinary user's commands that build or keep images run as root
	// of a user namespace of their own: this process starts vagent again
	// there and exits as it does (rootless.go). That comes before any
	// signal handling: this process forwards the signals it gets.
	probe := newRootCmd(&cliEnv{stdin: os.Stdin, stdout: stdout, stderr: stderr, log: log})
	if err := enterUserNamespace(probe, singleDashLongFlags(probe, args)); err != nil {
		fmt.Fprintf(stderr, "vagent: %v\n", err)
		return exitUnavailable
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A reader that goes away (`vagent builder build … | head -1`) must not
	// kill vagent by SIGPIPE in the middle of a build, leaving its mounts
	// and cgroups behind: with SIGPIPE caught, the write fails with EPIPE
	// and the command is cancelled like by Ctrl-C, cleaning up. (Caught,
	// not ignored: an ignored signal would stay ignored in the builds
	// vagent starts.)
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out := &closedStdout{w: stdout, onClose: func() { cancel(errStdoutClosed) }}

	env := &cliEnv{stdin: os.Stdin, stdout: out, stderr: stderr, log: log, getenv: os.Getenv}
	root := newRootCmd(env)
	root.SetArgs(singleDashLongFlags(root, args))
	cmd, err := root.ExecuteContextC(ctx)
	if out.closed.Load() {
		return exitStdoutClosed // the reader is gone: nothing to tell it
	}
	if err == nil {
		return 0
	}
	code := exitFailure
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case strings.HasPrefix(err.Error(), "unknown command "):
		code = exitUsage
	}
	if cmd == nil {
		cmd = root
	}
	if code == exitUsage {
		fmt.Fprint(stderr, cmd.UsageString())
	}
	if ee == nil || ee.err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
	}
	return code
}

// newRootCmd returns the command tree of vagent.
func newRootCmd(env *cliEnv) *cobra.Command {
	root := &cobra.Command{
		Use:   "vagent",
		Short: "a daemonless build agent for Vieter",
		Long: "vagent polls a Vieter server for build jobs and builds each in a fresh sandbox on a builder\n" +
			"image; `vagent build` builds a PKGBUILD locally the same way, like makechrootpkg.\n\n" +
			exitStatusHelp(),
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
		// No command: the usage on stderr, exit status 2.
		RunE: func(c *cobra.Command, args []string) error { return &exitError{code: exitUsage} },
	}
	root.SetOut(env.stdout)
	root.SetErr(env.stderr)
	root.SetVersionTemplate(versionText())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: exitUsage, err: err} })
	for _, newCmd := range commands {
		root.AddCommand(newCmd(env))
	}
	return root
}

func exitStatusHelp() string {
	var b strings.Builder
	b.WriteString("Exit status:\n")
	for _, s := range exitStatuses {
		fmt.Fprintf(&b, "  %-18s %s\n", s.code, s.meaning)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// newGroup returns a command that only holds subcommands: without one it
// prints its usage (exit status 2), an unknown one is a usage error.
func newGroup(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return &exitError{code: exitUsage}
			}
			return usageError("unknown %s command %q", c.Name(), args[0])
		},
	}
	c.AddCommand(subs...)
	return c
}

// cmdName is the command's path without "vagent ": "image pull".
func cmdName(c *cobra.Command) string { return strings.TrimPrefix(c.CommandPath(), "vagent ") }

// noArgs refuses arguments.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError("%s takes no arguments", cmdName(c))
	}
	return nil
}

// exactArgs wants n arguments, described by what ("one SOURCE").
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError("%s takes %s", cmdName(c), what)
		}
		return nil
	}
}

// singleDashLongFlags rewrites -name and -name=value to --name for the
// long flags of the command tree: vagent's flags were Go-style, and
// scripts and units written for them keep working. Arguments after "--"
// are left alone.
func singleDashLongFlags(root *cobra.Command, args []string) []string {
	long := map[string]bool{"help": true, "version": true}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) { long[f.Name] = len(f.Name) > 1 })
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if n, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "="); strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && long[n] {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}
