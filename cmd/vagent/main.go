// Command vagent is a daemonless, rootless build agent for Vieter.
//
// The command is a thin layer: it parses flags and configuration, sets up
// logging and a signal context, and wires the oci, sandbox and poll packages
// together. It also holds the libcontainer init re-exec hook (see init.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
)

// command is one `vagent` subcommand. Subcommands with their own
// subcommands (such as `vagent image`) dispatch further in run.
type command struct {
	name    string
	summary string
	// run executes the command with the arguments after its name. It
	// returns an exit code through exitError, or a plain error (exit 1).
	run func(ctx context.Context, env *cliEnv, args []string) error
}

// cliEnv carries what every command needs from the process.
type cliEnv struct {
	stdout io.Writer
	stderr io.Writer
	log    *logrus.Logger
}

var commands = map[string]*command{}

// register adds a subcommand. It is called from init functions, which also
// run in every container start: keep it to a map insert.
func register(c *command) { commands[c.name] = c }

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

// usageError reports bad command-line input (exit status 2).
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
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
	env := &cliEnv{stdout: stdout, stderr: stderr, log: log}

	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "vagent: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := c.run(ctx, env, args[1:])
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if ee == nil || ee.err != nil {
		fmt.Fprintf(stderr, "vagent %s: %v\n", c.name, err)
	}
	return code
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: vagent <command> [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
}

// newFlagSet returns a flag set for a subcommand that reports errors
// instead of exiting, and prints its usage to the command's stderr.
func newFlagSet(env *cliEnv, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: vagent %s\n", synopsis)
		var b strings.Builder
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(env.stderr)
		if b.Len() > 0 {
			fmt.Fprint(env.stderr, b.String())
		}
	}
	return fs
}

// parseFlags parses args, turning flag errors into usage errors (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2}
	}
	return nil
}
