package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/internal/metrics"
	"github.com/vieter-v/vagent/poll"
)

func newStatusCmd(env *cliEnv) *cobra.Command {
	var address, dataDir, config string
	var asJSON bool
	c := &cobra.Command{
		Use:   "status [--address HOST:PORT | --data-dir DIR | --config FILE] [--json]",
		Short: "show a running agent's slots, or the pending logs of a data dir",
		Long: "Show a running agent's slots (from its /status endpoint at metrics_address), or the\n" +
			"logs waiting for upload in a data dir's spool. It changes nothing.",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
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
				st, err := fetchStatus(c.Context(), address)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(env.stdout, metrics.NewStatusJSON(*st))
				}
				printAgentStatus(env.stdout, st, time.Now())
				return nil
			}
			if dataDir == "" {
				dataDir = defaultDataDir
			}
			if err := requireDataDir(dataDir); err != nil {
				return err
			}
			var logs []poll.PendingLog
			var err error
			if _, serr := os.Stat(filepath.Join(dataDir, "logs", "pending")); !errors.Is(serr, os.ErrNotExist) {
				// Without a spool (no agent ran here yet) there is nothing pending.
				if logs, err = poll.Pending(dataDir); logs == nil && err != nil {
					return err
				}
			}
			if err != nil {
				fmt.Fprintf(env.stderr, "vagent status: %v\n", err) // damaged entries; the rest is shown
			}
			if asJSON {
				if logs == nil {
					logs = []poll.PendingLog{} // [], not null
				}
				return printJSON(env.stdout, logs)
			}
			printSpool(env.stdout, dataDir, logs, time.Now())
			return nil
		},
	}
	fs := c.Flags()
	fs.StringVar(&address, "address", "", "the agent's metrics_address: ask its /status endpoint")
	dataDirVar(fs, &dataDir, "", "read the log spool of this data `DIR` (default "+defaultDataDir+")")
	fs.StringVar(&config, "config", "", "agent.yaml: use its metrics_address if set, else its data_dir")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// statusURL turns a listen address (":9100", "host:9100") or a URL into
// the URL of /status.
func statusURL(addr string) string {
	if !strings.Contains(addr, "://") {
		if strings.HasPrefix(addr, ":") {
			addr = "127.0.0.1" + addr
		}
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/") + "/status"
}

func fetchStatus(ctx context.Context, addr string) (*poll.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, statusURL(addr), nil)
	if err != nil {
		return nil, fmt.Errorf("agent address: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the agent (is metrics_address set and the agent running?): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("asking the agent: %s", resp.Status)
	}
	var body metrics.StatusJSON
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("reading the agent's status: %w", err)
	}
	st, err := body.Decode()
	if err != nil {
		return nil, fmt.Errorf("reading the agent's status: %w", err)
	}
	return &st, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

// clean makes server-supplied text safe for a terminal, and short.
func clean(s string) string { return cleanN(s, 60) }

// cleanN makes text from elsewhere safe for a terminal: control
// characters become '?', and it is cut at n bytes.
func cleanN(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

func printAgentStatus(w io.Writer, st *poll.Status, now time.Time) {
	state := "running"
	if st.Stopping {
		state = "stopping"
	}
	name := ""
	if st.Agent != "" {
		name = " " + clean(st.Agent)
	}
	fmt.Fprintf(w, "agent%s: %s, arch %s, up %s\n", name, state, clean(st.Arch), now.Sub(st.Started).Round(time.Second))
	line := "last poll " + ago(now, st.LastPoll)
	if st.LastPollError != "" {
		line += ", failed: " + clean(st.LastPollError) + "; last success " + ago(now, st.LastPollOK)
	}
	switch {
	case st.Stopping:
		line = "not polling: stopping (" + line + ")"
	case !st.Polling && len(st.Slots) > 0:
		line = "not polling: all slots busy (" + line + ")"
	}
	fmt.Fprintln(w, line)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tSTATE\tPHASE\tTARGET\tREPO\tSOURCE\tFOR")
	for _, s := range st.Slots {
		if s.Job == nil {
			fmt.Fprintf(tw, "%d\t%s\t-\t-\t-\t-\t-\n", s.Slot, s.State)
			continue
		}
		phase := string(s.Phase)
		if phase == "" {
			phase = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Slot, s.State, clean(phase), s.Job.TargetID, clean(s.Job.Repo), clean(s.Job.URL), now.Sub(s.Since).Round(time.Second))
	}
	tw.Flush()
	if len(st.Uploads) > 0 {
		fmt.Fprintln(w, "finished builds on their way to the server:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SLOT\tPHASE\tTARGET\tREPO\tFOR")
		for _, u := range st.Uploads {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", u.Slot, clean(string(u.Phase)), u.Job.TargetID, clean(u.Job.Repo), now.Sub(u.Since).Round(time.Second))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "logs pending upload: %d\n", st.PendingLogs)
}

func printSpool(w io.Writer, dir string, logs []poll.PendingLog, now time.Time) {
	fmt.Fprintf(w, "data dir %s: %d log(s) in the spool\n", dir, len(logs))
	if len(logs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tTARGET\tREPO\tSTATE\tEXIT\tSIZE\tSTARTED")
	for _, l := range logs {
		state, exit := "finished, "+string(l.Result), fmt.Sprint(l.ExitCode)
		if l.Running {
			state, exit = "building (or interrupted)", "-"
		}
		slot := fmt.Sprint(l.Slot)
		if l.Slot < 0 {
			slot = "?"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\n", slot, l.Job.TargetID, clean(l.Job.Repo), state, exit, l.Size, ago(now, l.Start))
	}
	tw.Flush()
	fmt.Fprintln(w, "(a build shown as building was interrupted if no agent uses the data dir; the next start reports it)")
}
