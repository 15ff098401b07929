# vagent — daemonless, rootless build agent for Vieter.
#
# `make deps test` is what CI runs (.ci/run). `make help` lists the targets.

GO        ?= go
# Build tags: seccomp links libseccomp (static) into the sandbox.
TAGS      ?= seccomp
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PREFIX    ?= /usr/local
# Test timeout for the whole tree (CI allows 90 minutes in all).
TEST_TIMEOUT ?= 45m
BENCH     ?= .
BENCH_COUNT ?= 1

# Every Debian package the build, the tests, the benchmarks and the demo need.
# BENCH_PACKAGES are the benchmarks' peers, installed by `make bench` only.
# passt gives pasta, the isolated network of builds (docs/security.md);
# slirp4netns is its peer in BenchmarkNetworkStacks.
DEB_PACKAGES := \
	build-essential pkg-config libseccomp-dev git ca-certificates curl \
	docker-registry busybox-static debootstrap umoci skopeo runc \
	pacman-package-manager makepkg fakeroot libarchive-tools zstd pigz xz-utils \
	uidmap iproute2 procps passt
BENCH_PACKAGES := podman slirp4netns
# STRESS_PACKAGES load the CPUs for `make test-stress`.
STRESS_PACKAGES := stress
# VM_PACKAGES boot the cgroup v2 VM of `make test-vm` (contrib/vm).
VM_PACKAGES := qemu-system-x86 mmdebstrap e2fsprogs

# install-debs installs, idempotently, the Debian packages named in $(1).
define install-debs
	@missing=$$(for p in $(1); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "all $(words $(1)) Debian packages present"; fi
endef

export CGO_ENABLED := 1
# -trimpath keeps absolute paths out of compiled packages, so the build cache
# serves a fresh clone in another directory too (the tests do not use them).
export GOFLAGS := -trimpath $(GOFLAGS)

.PHONY: help deps bench-deps build check-static install test unit test-stress lint fuzz bench demo demo-stack testimages test-vm clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

deps: ## install, idempotently, every Debian package the tests need
	$(call install-debs,$(DEB_PACKAGES))
	@# Rootless builds' pasta opens /dev/net/tun as an ordinary user: udev's
	@# default rules make it 0666, a host (VM, container) without udev leaves 0600.
	@if [ -c /dev/net/tun ] && [ "$$(stat -c %a /dev/net/tun)" != 666 ]; then \
		echo "chmod 0666 /dev/net/tun (as udev makes it; rootless builds need it)"; chmod 0666 /dev/net/tun; fi
	$(GO) mod download

bench-deps: deps ## also install the benchmarks' peers (podman)
	$(call install-debs,$(BENCH_PACKAGES))

build: ## build bin/vagent: static, -trimpath, version stamped, seccomp linked in
	$(GO) build -trimpath -tags '$(TAGS) netgo osusergo' \
		-ldflags '$(LDFLAGS) -s -w -extldflags -static' -o bin/vagent ./cmd/vagent
	@ls -l bin/vagent | awk '{printf "bin/vagent: %.1f MiB\n", $$5/1048576}'

check-static: build ## check that bin/vagent is static, has seccomp and runs; print its size
	@out=$$(ldd bin/vagent 2>&1); case "$$out" in \
		*"not a dynamic executable"*|*"statically linked"*) ;; \
		*) echo "check-static: bin/vagent is dynamically linked:"; echo "$$out"; exit 1 ;; esac
	@if readelf -lW bin/vagent | grep -q 'INTERP'; then echo "check-static: bin/vagent has a program interpreter"; exit 1; fi
	@v=$$(bin/vagent version) || { echo "check-static: bin/vagent version failed"; exit 1; }; echo "$$v"; \
		echo "$$v" | grep -q '^features: .*seccomp' || { echo "check-static: bin/vagent lacks seccomp"; exit 1; }
	@stat -c %s bin/vagent | awk '{printf "check-static: bin/vagent is static, %d bytes (%.1f MiB)\n", $$1, $$1/1048576}'

install: build ## install bin/vagent into $(PREFIX)/bin
	install -D -m 0755 bin/vagent $(DESTDIR)$(PREFIX)/bin/vagent

testimages: ## build (once, cached by recipe) the test images: busybox and the Arch-like image
	$(GO) run ./internal/testkit/cmd/testimages

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags '$(TAGS)' ./...
	$(GO) tool staticcheck -tags '$(TAGS)' ./...

# RACE_GCFLAGS leave klauspost/compress (gzip, zstd) out of the race
# detector's instrumentation: inflating a 420 MB layer took 29 s instead
# of 2.6 s with it, in every test that unpacks the Arch-like image.
# Our code, which calls it, stays instrumented (docs/testing.md).
RACE_GCFLAGS := github.com/klauspost/compress/...=-race=false

# GORACE: a race-built process that exits with status 0 sleeps a second
# first by default (atexit_sleep_ms), and the tests start the test binary
# as vagent, as an agent's child, many times.
unit: SHELL := /bin/bash
# The end-to-end tests that start vagent as a process start bin/vagent, the
# binary users install, not the race-built test binary (cmd/vagent/main_test.go).
unit: build ## the tests alone, with the race detector, never from the test cache (they use images, tools and the kernel, which the cache does not see); ends with the ten slowest tests
	set -o pipefail; VAGENT_TEST_AGENT=$(CURDIR)/bin/vagent GORACE='atexit_sleep_ms=0 $(GORACE)' \
		$(GO) test -race -gcflags='$(RACE_GCFLAGS)' -count=1 -json -tags '$(TAGS)' -timeout $(TEST_TIMEOUT) ./... \
		| $(GO) run ./internal/testkit/cmd/testreport -slowest 10

test: lint testimages unit ## everything CI runs: lint, test images, all tests with -race

test-stress: deps testimages ## the flakiness check: go test -count=3 ./... while `stress -c 2` keeps both cores busy
	$(call install-debs,$(STRESS_PACKAGES))
	stress -c $${STRESS_CPUS:-2} --timeout 7200 >/dev/null & s=$$!; trap 'kill $$s' EXIT; \
		CI=true $(GO) test -count=3 -tags '$(TAGS)' -timeout 90m ./...

test-vm: build ## boot Debian 12 (cgroup v2) in QEMU: vagent check + sandbox tests per agent placement (contrib/vm)
	$(call install-debs,$(VM_PACKAGES))
	@mkdir -p bin/vm
	$(GO) test -c -tags '$(TAGS)' -o bin/vm/sandbox.test ./sandbox
	$(GO) test -c -tags '$(TAGS)' -o bin/vm/vagent.test ./cmd/vagent
	$(GO) run ./internal/testkit/cmd/testimages
	contrib/vm/test-vm.sh

# Fuzz targets as package:Target; their seed corpora run in every `make test`.
FUZZ_TARGETS := ./oci:FuzzUnpack ./oci:FuzzUnpackTar ./vieter:FuzzClientAnswer ./poll:FuzzSpoolHeader \
	./job:FuzzParseSrcInfo ./internal/config:FuzzConfig ./internal/vieterserver:FuzzReadPackage \
	./internal/vieterserver:FuzzVerCmp

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t"; \
		$(GO) test -tags '$(TAGS)' -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $${FUZZTIME:-30s} "$${t%%:*}"; \
	done

bench: bench-deps testimages ## benchmarks with peer ratios (see docs/benchmarks.md)
	VAGENT_BENCH_IDLE=$${VAGENT_BENCH_IDLE:-60s} \
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench '$(BENCH)' -count $(BENCH_COUNT) -benchtime 1x -timeout 60m ./...

demo: build testimages ## end to end on an embedded default: local registry, test images, test server
	$(GO) run ./internal/testkit/cmd/demo -vagent bin/vagent

demo-stack: build testimages ## the registry and test server of the demo, until Ctrl-C: try vagent build/run by hand (prints how)
	$(GO) run ./internal/testkit/cmd/demo -stack -vagent bin/vagent

clean: ## remove build output
	rm -rf bin
