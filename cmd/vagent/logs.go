package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/poll"
)

func newLogsCmd(env *cliEnv) *cobra.Command {
	var address, dataDir, config string
	var target int
	var follow bool
	c := &cobra.Command{
		Use:   "logs [-f] SLOT | --target ID [--address HOST:PORT | --data-dir DIR | --config FILE]",
		Short: "show the log of a running build (slot or target), and follow it with -f",
		Long: "Show the log of the build in slot SLOT, or of target ID, as the agent will upload it: its\n" +
			"header, then the build's output so far. With -f, follow the build's output until it ends.\n" +
			"The log comes from the agent's /logs endpoint at metrics_address (--address, or --config\n" +
			"with metrics_address set), else from the data dir's spool (--data-dir, or --config). A\n" +
			"running build is shown first, then the newest log of that slot or target not uploaded yet;\n" +
			"uploaded logs are on the server. It changes nothing.",
		Args: func(c *cobra.Command, args []string) error {
			switch {
			case len(args) > 1:
				return usageError("logs takes one SLOT")
			case len(args) == 1 && target != 0:
				return usageError("use SLOT or --target, not both")
			case len(args) == 0 && target == 0:
				return usageError("logs takes a SLOT (a number, as vagent status shows it) or --target ID")
			case target < 0:
				return usageError("--target must be a target id ≥ 1")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			sel := poll.LogSelector{Slot: -1, Target: target}
			if len(args) == 1 {
				n, err := strconv.Atoi(args[0])
				if err != nil || n < 0 {
					return usageError("SLOT %q: want a slot number (0, 1, …), as vagent status shows it", args[0])
				}
				sel.Slot = n
			}
			set := 0
			for _, s := range []string{address, dataDir, config} {
				if s != "" {
					set++
				}
			}
			if set > 1 {
				return usageError("use one of --address, --data-dir and --config")
			}
			if config != "" {
				cfg, err := loadAgentConfig(env, config, false)
				if err != nil {
					return err
				}
				address, dataDir = cfg.MetricsAddress, cfg.DataDir
			}
			if address != "" {
				return fetchLog(c.Context(), env.stdout, address, sel, follow)
			}
			if dataDir == "" {
				dataDir = defaultDataDir
			}
			if err := requireDataDir(dataDir); err != nil {
				return err
			}
			err := poll.FollowLog(c.Context(), dataDir, sel, follow, env.stdout)
			if errors.Is(err, poll.ErrNoLog) {
				return fmt.Errorf("%w in %s (not started, or uploaded: the server has it)", err, dataDir)
			}
			return err
		},
	}
	fs := c.Flags()
	fs.BoolVarP(&follow, "follow", "f", false, "follow the build's output until the build ends")
	fs.IntVar(&target, "target", 0, "show the build of the target `ID` instead of a slot's")
	fs.StringVar(&address, "address", "", "the agent's metrics_address: ask its /logs endpoint")
	dataDirVar(fs, &dataDir, "", "read the log spool of this data `DIR` (default "+defaultDataDir+")")
	fs.StringVar(&config, "config", "", "agent.yaml: use its metrics_address if set, else its data_dir")
	return c
}

// logsURL is the agent's /logs URL of sel.
func logsURL(addr string, sel poll.LogSelector, follow bool) string {
	u := strings.TrimSuffix(statusURL(addr), "/status") + "/logs/"
	if sel.Slot >= 0 {
		u += "slot/" + strconv.Itoa(sel.Slot)
	} else {
		u += "target/" + strconv.Itoa(sel.Target)
	}
	if follow {
		u += "?follow=true"
	}
	return u
}

// fetchLog copies a log from a running agent's /logs endpoint to w.
func fetchLog(ctx context.Context, w io.Writer, addr string, sel poll.LogSelector, follow bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, logsURL(addr, sel, follow), nil)
	if err != nil {
		return fmt.Errorf("agent address: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("asking the agent (is metrics_address set and the agent running?): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("asking the agent: %s: %s", resp.Status, cleanN(strings.TrimSpace(string(msg)), 300))
	}
	_, err = io.Copy(w, resp.Body)
	if err != nil && ctx.Err() != nil {
		return nil // interrupted while following
	}
	return err
}
