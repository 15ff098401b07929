// Package config is agent.yaml: its types (Config and the types of its
// sections and values), its defaults (Default), its loading (Load, Parse)
// and its validation. Every command of vagent reads the same file — `vagent
// run` to serve, build, check, status, logs and builder to find the data
// dir, the limits and the registries — so there is one definition of it,
// with one set of error messages, here rather than in the CLI.
//
// Loading is strict and precise: the file is decoded node by node (not
// with yaml.Unmarshal) so that every unknown key, repeated key and bad
// value is reported with its file and line (Error), all at once and in
// the order of the file; VIETER_<KEY> and VIETER_<KEY>_FILE override
// every scalar key and list of strings (EnvName, CheckEnviron for the
// variables no key reads); a file in the reference agent's TOML format is
// recognised and explained; files holding secrets that other users may
// read are reported in Config.Warnings. Secrets (Secret) never print.
//
// What it does not do: it turns a Config into no other package's options
// (poll, vieter, oci, sandbox, job, builder — cmd/vagent's options.go
// does), knows no data dir layout beyond data_dir itself, opens no data
// dir and logs nothing (the caller logs Warnings). Where a value's grammar
// or default is another package's it asks that package: the leaves
// internal/pacman (architectures, repositories, SigLevel) and sandbox
// (build_network.mode and forward entries, the /tmp size), and poll (the
// log cap); only pacman_cache.max_size's default is restated, since the
// build package is far above a configuration (cmd/vagent's
// TestConfigDefaultsAgree checks the two agree).
package config
