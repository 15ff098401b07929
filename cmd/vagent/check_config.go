package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/vieter"
)

// defaultBaseImage is the base image Vieter gives jobs without one, the
// one `vagent check --config` checks unless told others.
const defaultBaseImage = "archlinux:base-devel"

// checkTimeout bounds each network check of `vagent check --config`.
const checkTimeout = 20 * time.Second

// checkSetup verifies, without changing anything, what an agent of cfg
// depends on besides the host: the server answers and accepts the api
// key, every registry endpoint (mirrors and origins) answers, which
// endpoint would serve each base image, and that a repository of each
// base image in the store uses the Pacman mirrors.
func checkSetup(ctx context.Context, cfg *config.Config, baseImages []string) []checkLine {
	var lines []checkLine
	lines = append(lines, checkServer(ctx, cfg)...)
	ociOpts, err := registryOptions(cfg)
	if err != nil {
		return append(lines, checkLine{status: statusMissing, name: "registries", detail: err.Error()})
	}
	checked := map[string]bool{}
	for _, ref := range baseImages {
		lines = append(lines, checkBaseImage(ctx, ref, ociOpts))
		if r, err := oci.ParseReference(ref); err == nil && r.Transport == oci.TransportRegistry {
			checked[registryKey(r.Name.Context().RegistryStr())] = true
		}
	}
	// The registries the configuration names that no base image checked.
	var hosts []string
	for h := range cfg.Registries.Mirrors {
		hosts = append(hosts, h)
	}
	hosts = append(hosts, cfg.Registries.Insecure...)
	for h := range cfg.Registries.Credentials {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	for _, h := range slices.Compact(hosts) {
		if !checked[registryKey(h)] {
			lines = append(lines, checkRegistry(ctx, h, ociOpts))
		}
	}
	if ms := cfg.PacmanMirrorList(); len(ms) > 0 {
		for _, ref := range baseImages {
			lines = append(lines, checkPacmanMirrors(cfg, ref))
		}
	}
	return lines
}

// registryKey folds Docker Hub's names into one.
func registryKey(h string) string {
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return h
}

// checkServer asks the server whether it answers and accepts the key.
func checkServer(ctx context.Context, cfg *config.Config) []checkLine {
	if cfg.Address == placeholderAddress || cfg.APIKey.Reveal() == placeholderKey {
		return []checkLine{{status: statusMissing, name: "server", detail: "address or api_key is not set: vagent run needs both (or VIETER_ADDRESS, VIETER_API_KEY_FILE)"}}
	}
	c, err := vieterClient(cfg)
	if err != nil {
		return []checkLine{{status: statusMissing, name: "server", detail: err.Error()}}
	}
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if err := c.Health(cctx); err != nil {
		return []checkLine{
			{status: statusMissing, name: "server", detail: fmt.Sprintf("%s does not answer: %v", cfg.Address, err)},
			{status: statusSkipped, name: "api key", detail: "not checked: the server does not answer"},
		}
	}
	lines := []checkLine{{status: statusOK, name: "server", detail: cfg.Address + " answers"}}
	switch err := c.CheckKey(cctx); {
	case err == nil:
		lines = append(lines, checkLine{status: statusOK, name: "api key", detail: "accepted by the server"})
	case errors.Is(err, vieter.ErrUnauthorized):
		lines = append(lines, checkLine{status: statusMissing, name: "api key", detail: "the server rejects api_key: " + err.Error()})
	default:
		lines = append(lines, checkLine{status: statusMissing, name: "api key", detail: "could not check it: " + err.Error()})
	}
	return lines
}

// checkBaseImage asks each endpoint of ref for it: the line fails when
// none has it, or when one does not answer.
func checkBaseImage(ctx context.Context, ref string, opts []oci.Option) checkLine {
	if r, err := oci.ParseReference(ref); err == nil && r.Transport != oci.TransportRegistry {
		return checkLine{status: statusSkipped, name: "base image", detail: ref + ": a local image, no registry to ask (jobs from a server name registry images only)"}
	}
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	checks, served, err := oci.CheckImage(cctx, ref, opts...)
	if err != nil {
		return checkLine{status: statusMissing, name: "base image", detail: fmt.Sprintf("%s: %v", ref, err)}
	}
	var parts []string
	ok := served >= 0
	for i, c := range checks {
		switch {
		case i == served:
			parts = append(parts, c.Label()+": has it, serves it")
		case c.Err == nil:
			parts = append(parts, c.Label()+": has it")
		case errors.Is(c.Err, oci.ErrUnknownImage):
			parts = append(parts, c.Label()+": answers, does not have it")
		default:
			ok = false
			parts = append(parts, fmt.Sprintf("%s: %v", c.Label(), c.Err))
		}
	}
	l := checkLine{status: statusOK, name: "base image", detail: ref + ": " + strings.Join(parts, "; ")}
	if !ok {
		l.status = statusMissing
	}
	if served < 0 {
		l.detail = ref + ": no registry endpoint has it: " + strings.Join(parts, "; ")
	}
	return l
}

// checkRegistry asks each endpoint of a registry host whether it answers.
func checkRegistry(ctx context.Context, host string, opts []oci.Option) checkLine {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	checks, err := oci.CheckRegistry(cctx, host, opts...)
	if err != nil {
		return checkLine{status: statusMissing, name: "registry", detail: fmt.Sprintf("%s: %v", host, err)}
	}
	l := checkLine{status: statusOK, name: "registry"}
	var parts []string
	for _, c := range checks {
		if c.Err != nil {
			l.status = statusMissing
			parts = append(parts, fmt.Sprintf("%s: %v", c.Label(), c.Err))
		} else {
			parts = append(parts, c.Label()+" answers")
		}
	}
	l.detail = host + ": " + strings.Join(parts, "; ")
	return l
}

// checkPacmanMirrors reads the pacman.conf of ref from the store: a
// repository must include the mirror list, or pacman_mirrors would not be
// used (the builder's setup refuses that).
func checkPacmanMirrors(cfg *config.Config, ref string) checkLine {
	conf, _, err := oci.ReadRootfsFile(filepath.Join(cfg.DataDir, "images"), ref, "etc/pacman.conf", 1<<20)
	switch {
	case errors.Is(err, oci.ErrNotFound):
		return checkLine{status: statusSkipped, name: "pacman mirrors", detail: fmt.Sprintf("not checked: %s is not in the store yet (vagent image pull --config FILE %s, then check again)", ref, ref)}
	case err != nil:
		return checkLine{status: statusMissing, name: "pacman mirrors", detail: fmt.Sprintf("%s: %v", ref, err)}
	}
	users := pacman.MirrorListUsers(string(conf))
	if len(users) == 0 {
		return checkLine{status: statusMissing, name: "pacman mirrors", detail: fmt.Sprintf("not used: no repository in the /etc/pacman.conf of %s includes %s, so pacman_mirrors would not be used (its builder's setup fails)", ref, pacman.MirrorListPath)}
	}
	return checkLine{status: statusOK, name: "pacman mirrors", detail: fmt.Sprintf("used by %s of %s", strings.Join(users, ", "), ref)}
}
