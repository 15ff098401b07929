package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/sandbox"
)

// Rootless mode: vagent run by an ordinary user (docs/rootless.md). The
// commands that build or keep images first make the process root of a
// user namespace of its own (sandbox.EnterUserNamespace); the data dir and
// the configuration are then the user's (XDG), never root's.

// inUserNamespace are the commands that work on a data dir's images,
// builders or sandboxes: as an ordinary user they run in the user
// namespace. The others (status, logs, version, help, completion) read
// only what belongs to the user and run as they are started.
var inUserNamespace = map[string]bool{
	"run": true, "build": true, "check": true,
	"image pull": true, "image load": true, "image push": true, "image ls": true, "image rm": true, "image prune": true,
	"builder build": true, "builder ls": true, "builder rm": true, "builder prune": true,
}

// enterUserNamespace enters the user namespace for the command args name,
// as an ordinary user: it does not return then, unless entering fails,
// which ends the command with exitUnavailable (`vagent check` goes on as
// the user and reports what is missing, probing it itself). Root's
// commands go on as they are.
func enterUserNamespace(root *cobra.Command, args []string) error {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" || a == "--" {
			return nil
		}
	}
	c, _, err := root.Find(args)
	if err != nil || c == nil || !inUserNamespace[cmdName(c)] {
		return nil
	}
	if err := sandbox.EnterUserNamespace(); err != nil {
		if cmdName(c) == "check" {
			return nil
		}
		return &exitError{code: exitUnavailable, err: fmt.Errorf("%w\n(vagent check says the same; see docs/rootless.md)", err)}
	}
	return nil
}

// rootless tells whether vagent runs for an ordinary user: as that user,
// or as root of its user namespace.
func rootless() bool {
	if os.Geteuid() != 0 {
		return true
	}
	_, ok := sandbox.RootlessUser()
	return ok
}

// hostUser is the ordinary user vagent runs for, rootless.
func hostUser() (*user.User, error) {
	uid := os.Getuid()
	if u, ok := sandbox.RootlessUser(); ok {
		uid = int(u)
	}
	return user.LookupId(strconv.Itoa(uid))
}

// userHome is the rootless user's home directory: $HOME, else the user
// database's.
func userHome() string {
	if h := os.Getenv("HOME"); filepath.IsAbs(h) {
		return h
	}
	if u, err := hostUser(); err == nil && filepath.IsAbs(u.HomeDir) {
		return u.HomeDir
	}
	return ""
}

// xdgDir is an XDG base directory: $name when absolute, else home/def.
func xdgDir(name, def string) string {
	if d := os.Getenv(name); filepath.IsAbs(d) {
		return d
	}
	if h := userHome(); h != "" {
		return filepath.Join(h, def)
	}
	return ""
}

// defaultDataDir is the data dir when none is configured: root's
// /var/lib/vagent, an ordinary user's $XDG_DATA_HOME/vagent
// (~/.local/share/vagent): a user's vagent never touches root's.
var defaultDataDir = func() string {
	if rootless() {
		if d := xdgDir("XDG_DATA_HOME", ".local/share"); d != "" {
			return filepath.Join(d, "vagent")
		}
	}
	return "/var/lib/vagent"
}()

// userConfigFiles are where `vagent run` without a file looks for
// agent.yaml as an ordinary user, first found first: $XDG_CONFIG_HOME
// (~/.config), then each of $XDG_CONFIG_DIRS (/etc/xdg).
func userConfigFiles() []string {
	var files []string
	if d := xdgDir("XDG_CONFIG_HOME", ".config"); d != "" {
		files = append(files, filepath.Join(d, "vagent", "agent.yaml"))
	}
	dirs := os.Getenv("XDG_CONFIG_DIRS")
	if dirs == "" {
		dirs = "/etc/xdg"
	}
	for _, d := range strings.Split(dirs, ":") {
		if filepath.IsAbs(d) {
			files = append(files, filepath.Join(d, "vagent", "agent.yaml"))
		}
	}
	return files
}

// findUserConfig returns the first of userConfigFiles that exists, or "".
func findUserConfig() (string, error) {
	for _, f := range userConfigFiles() {
		if _, err := os.Stat(f); err == nil {
			return f, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("configuration %s: %w", f, err)
		}
	}
	return "", nil
}

// warnUnlimited says once, at start, that builds run without cgroup
// limits: a rootless agent without a delegated cgroup that was given no
// limit (one it was given is refused by sandbox.New).
func warnUnlimited(log logrus.FieldLogger, sb *sandbox.Manager) {
	if err := sb.Unlimited(); err != nil {
		log.WithField("why", err.Error()).Warn("builds run without memory, pids and cpu limits: this rootless agent has no delegated cgroup")
	}
}

// storeOptions are the options every image store of the data dir is
// opened with: rootless, its trees are unpacked with their owners shifted
// to the sandbox's ids (sandbox.LowerShift).
func storeOptions() []oci.Option {
	if s := sandbox.LowerShift(); s != 0 {
		return []oci.Option{oci.WithUnpackOptions(oci.WithIDShift(s, s))}
	}
	return nil
}
