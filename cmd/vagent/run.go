package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/internal/metrics"
	"github.com/vieter-v/vagent/poll"
	"github.com/vieter-v/vagent/vieter"
)

// runDeps is what `vagent run` hands the executor factory.
type runDeps struct {
	log     logrus.FieldLogger
	metrics *metrics.Metrics // its ImageObserver hooks and OCIProgress
	server  *vieter.Client   // the agent's one client of the server
}

// newExecutor makes the executor of `vagent run` from the configuration
// (newBuildExecutor: builds on builder images in sandboxes, its state under
// the data dir: images/, sandbox/, builders/, build/; see
// docs/architecture.md); cleanup runs once the agent stopped. Tests put a
// fake executor in its place.
var newExecutor = newBuildExecutor

// exitNow ends the process at the third signal (tests replace it).
var exitNow = os.Exit

func newRunCmd(env *cliEnv) *cobra.Command {
	var config string
	c := &cobra.Command{
		Use:   "run [agent.yaml]",
		Short: "run the agent: poll the Vieter server and build its jobs",
		Long: "Run the agent: poll the Vieter server and build its jobs until SIGINT or SIGTERM.\n" +
			"The configuration is agent.yaml (or --config FILE) with the VIETER_* variables over it;\n" +
			"without a file it comes from VIETER_* variables alone (see docs/configuration.md); an\n" +
			"ordinary user's agent (rootless, docs/rootless.md) reads ~/.config/vagent/agent.yaml then.\n\n" +
			"Signals: the first SIGINT/SIGTERM stops polling and lets running builds finish within\n" +
			"shutdown_grace, the second cancels them, the third exits at once (status 130). SIGHUP\n" +
			"is ignored: restart the agent to apply a changed configuration.",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 1 || (len(args) == 1 && config != "") {
				return usageError("run takes one configuration file")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 1 {
				config = args[0]
			}
			return runAgent(c.Context(), env, config)
		},
	}
	c.Flags().StringVar(&config, "config", "", "read the configuration `FILE` (the same as the argument)")
	return c
}

func runAgent(ctx context.Context, env *cliEnv, config string) (retErr error) {
	if config == "" && rootless() {
		// An ordinary user's agent.yaml lives where XDG says.
		found, err := findUserConfig()
		if err != nil {
			return &exitError{code: exitConfig, err: err}
		}
		config = found
	}
	cfg, err := loadAgentConfig(env, config, true)
	if err != nil {
		return err
	}
	// One agent per data dir: a second one is refused before it touches
	// anything (the other vagent commands share the data dir with it).
	lock, err := poll.LockDataDir(cfg.DataDir)
	switch {
	case errors.Is(err, fs.ErrPermission) && rootless():
		return &exitError{code: exitUnavailable, err: fmt.Errorf("%w (an ordinary user's vagent needs a data dir of its own, by default %s: see docs/rootless.md)", err, defaultDataDir)}
	case err != nil:
		return err
	}
	defer lock.Unlock()
	closeLog, err := setupLogging(env, cfg)
	if err != nil {
		return err
	}
	defer closeLog()
	log := env.log
	log.WithField("config", cfg).Debug("configuration loaded")
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}

	// The first signal cancels ctx (a graceful stop), the second cancels
	// running builds, the third exits at once.
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// SIGHUP (a closed terminal, `systemctl reload`) must not end the
	// agent without draining: it is ignored; a changed configuration
	// needs a restart.
	signal.Ignore(syscall.SIGHUP)
	defer signal.Reset(syscall.SIGHUP)
	notifyStopping := sync.OnceFunc(func() {
		if err := sdNotify("STOPPING=1"); err != nil {
			log.WithError(err).Warn("telling the service manager")
		}
	})
	defer notifyStopping()

	m := metrics.New()
	if err := m.SetBuildInfo(version, commit, cfg.AgentName); err != nil {
		return err
	}
	client, err := vieterClient(cfg)
	if err != nil {
		return err
	}
	exec, cleanup, err := newExecutor(ctx, cfg, runDeps{log: log, metrics: m, server: client})
	if err != nil {
		return fmt.Errorf("setting up builds: %w", err)
	}
	if cleanup != nil {
		defer func() {
			if err := cleanup(); err != nil {
				log.WithError(err).Warn("cleaning up")
				retErr = errors.Join(retErr, err)
			}
		}()
	}
	// The data dir's id range, recorded by the executor's sandbox;
	// rootless, the user's subordinate ids.
	idRange := "the user's subordinate ids (rootless)"
	if !rootless() {
		idRange = ""
		if ir, err := resolveIDRange(cfg.DataDir, cfg, false, log); err == nil {
			idRange = ir.String()
		}
	}
	// The start line waits for the server's first answer: until then a
	// wrong address or api_key must not look like a running agent.
	configName := config
	if configName == "" {
		configName = "(VIETER_* variables)"
	}
	metricsAddr := cfg.MetricsAddress
	if metricsAddr == "" {
		metricsAddr = "off"
	}
	obs := &startObserver{Observer: m, log: log, onFirst: func() {
		start := logrus.Fields{"version": version, "config": configName, "server": cfg.Address, "arch": cfg.Arch,
			"slots": cfg.MaxConcurrentBuilds, "agent": cfg.AgentName, "poll_interval": cfg.PollingFrequency.D(),
			"metrics_address": metricsAddr, "data_dir": cfg.DataDir}
		if idRange != "" {
			start["id_range"] = idRange
		}
		logLifecycle(env.log, start, "vagent running")
	}}
	agent, err := poll.New(client, exec, append(pollOptions(cfg), poll.WithLogger(log), poll.WithObserver(obs), poll.WithDataDirLock(lock))...)
	if err != nil {
		return err
	}
	if cfg.MetricsAddress != "" {
		stop, err := serveMetrics(ctx, cfg, m, agent, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	// handle answers the n-th signal. The first one also cancels ctx (see
	// main), so the agent may stop before the goroutine below has taken
	// it from sigs: the signals still pending when Run returns are
	// answered then, so that the "stopping" line is never lost.
	n := 0
	handle := func(sig os.Signal) {
		n++
		switch n {
		case 1:
			notifyStopping()
			log.WithFields(logrus.Fields{"signal": sig, "grace": cfg.ShutdownGrace.D()}).
				Warn("stopping: builds may finish within shutdown_grace; signal again to cancel them")
		case 2:
			log.WithField("signal", sig).Warn("cancelling running builds; signal again to exit at once")
			agent.Abort()
		default:
			log.WithField("signal", sig).Error("exiting at once: pending logs and jobs are handled at the next start")
			exitNow(exitSignalled)
		}
	}
	stopSignals, signalsDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(signalsDone)
		for {
			select {
			case <-stopSignals:
				return
			case sig := <-sigs:
				handle(sig)
			}
		}
	}()
	endSignals := sync.OnceFunc(func() {
		close(stopSignals)
		<-signalsDone
		for {
			select {
			case sig := <-sigs:
				handle(sig)
			default:
				return
			}
		}
	})
	defer endSignals()
	log.WithFields(logrus.Fields{"server": cfg.Address, "agent": cfg.AgentName}).Info("vagent started: polling the server")
	if err := sdNotify("READY=1\nSTATUS=polling " + cfg.Address + ": no answer yet"); err != nil {
		log.WithError(err).Warn("telling the service manager")
	}
	if err := agent.Run(ctx); err != nil {
		return err
	}
	endSignals()
	notifyStopping()
	logLifecycle(env.log, nil, "vagent stopped")
	return nil
}

// serveMetrics listens on metrics_address and serves the agent's metrics
// until ctx is done; stop waits for the server to end.
func serveMetrics(ctx context.Context, cfg *config.Config, m *metrics.Metrics, agent *poll.Agent, log logrus.FieldLogger) (stop func(), err error) {
	if err := m.WatchAgent(agent); err != nil {
		return nil, err
	}
	h, err := metrics.Handler(m, agent, metrics.WithDataDir(cfg.DataDir), metrics.WithLogger(log))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.MetricsAddress)
	if err != nil {
		return nil, fmt.Errorf("metrics_address: %w", err)
	}
	log.WithField("address", ln.Addr().String()).Info("serving /metrics, /healthz, /readyz and /status")
	// The server outlives the agent's polling: it stops after Run returned.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := metrics.Serve(sctx, ln, h); err != nil {
			log.WithError(err).Error("metrics server")
		}
	}()
	return func() { cancel(); <-done }, nil
}

// setupLogging configures the command's logger from the configuration:
// level, format, and the log file besides stderr.
func setupLogging(env *cliEnv, cfg *config.Config) (closeFn func(), err error) {
	lvl, err := config.ParseLogLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	level := map[string]logrus.Level{"FATAL": logrus.FatalLevel, "ERROR": logrus.ErrorLevel, "WARN": logrus.WarnLevel,
		"INFO": logrus.InfoLevel, "DEBUG": logrus.DebugLevel}[lvl]
	env.log.SetLevel(level)
	if cfg.LogFormat == "json" {
		env.log.SetFormatter(durationFormatter{&logrus.JSONFormatter{}})
	} else {
		env.log.SetFormatter(durationFormatter{&logrus.TextFormatter{FullTimestamp: true}})
	}
	path := logFilePath(cfg)
	if cfg.LogFile == "" && stderrIsJournal(env.stderr) {
		path = "" // the journal has every line; no default file besides it
	}
	if path == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil { // the data dir: see poll.Agent.Run
		return nil, fmt.Errorf("log file: %w", err)
	}
	f, err := openRotatingFile(path, logFileMaxSize)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	prev := env.log.Out
	env.log.SetOutput(io.MultiWriter(env.stderr, f))
	return func() {
		env.log.SetOutput(prev)
		_ = f.Close()
	}, nil
}
