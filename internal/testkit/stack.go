package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vieter-v/vagent/internal/vieterserver"
)

// StackAPIKey is the API key of a Stack's Vieter server.
const StackAPIKey = "vagent-demo-key-5f2a9c"

// DepsRepo is the Pacman repository of a Stack that serves the meta-packages
// every builder installs (base-devel and git): the Arch-like image has no
// Arch repositories.
const DepsRepo = "deps"

// Stack is what an end-to-end run of the agent needs on one machine: a local
// registry holding the Arch-like base image, a Vieter-compatible server
// (jobs, logs, the package repository) with the builder's meta-packages
// published, and a file server for PKGBUILDs of `url` targets. The demo
// (`make demo`) and the `vagent run` end-to-end test share it.
type Stack struct {
	Dir       string
	Registry  *Registry
	Server    *vieterserver.Server
	BaseImage string // the Arch-like image in the local registry

	http    *http.Server
	address string

	mu    sync.Mutex
	files map[string]string // served PKGBUILDs: path -> content
}

// StartStack starts a Stack with its state under dir. Building the Arch-like
// image (once, cached) needs root and a Debian mirror.
func StartStack(ctx context.Context, dir string, log logrus.FieldLogger) (s *Stack, retErr error) {
	if log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		log = l
	}
	s = &Stack{Dir: dir, files: map[string]string{}}
	defer func() {
		if retErr != nil {
			s.Close()
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	log.Info("test stack: Arch-like base image (built once, then cached)")
	img, _, err := ArchLikeImage(ctx, WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("arch-like image: %w", err)
	}
	log.Info("test stack: starting docker-registry")
	if s.Registry, err = StartRegistry(ctx, filepath.Join(dir, "registry")); err != nil {
		return nil, err
	}
	s.BaseImage = s.Registry.Host() + "/demo/archlike:latest"
	log.WithField("image", s.BaseImage).Info("test stack: pushing the base image")
	if err := Push(ctx, img, s.BaseImage); err != nil {
		return nil, err
	}
	if s.Server, err = vieterserver.New(vieterserver.WithAPIKey(StackAPIKey), vieterserver.WithDataDir(filepath.Join(dir, "vieter"))); err != nil {
		return nil, err
	}
	if err := s.Server.PublishMetaPackages(DepsRepo, "base-devel", "git"); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.address = "http://" + ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/files/", s.serveFile)
	mux.Handle("/", s.Server)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(ln) //nolint:errcheck // ends with Close
	log.WithField("address", s.address).Info("test stack: Vieter test server listening")
	return s, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Address is the Vieter server's base URL.
func (s *Stack) Address() string { return s.address }

// ServeFile serves content at Address()+"/files/"+name (for `url` targets)
// and returns that URL.
func (s *Stack) ServeFile(name, content string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[name] = content
	return s.address + "/files/" + name
}

func (s *Stack) serveFile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	c, ok := s.files[strings.TrimPrefix(r.URL.Path, "/files/")]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write([]byte(c))
}

// AddURLTarget adds a `url` target building pkgbuild into repo and queues
// one job for arch. It returns the target id.
func (s *Stack) AddURLTarget(name, repo, arch, pkgbuild string) (int, error) {
	id := s.Server.AddTarget(vieterserver.Target{
		Kind: "url", URL: s.ServeFile(name+"/PKGBUILD", pkgbuild), Repo: repo,
		Arches: []string{arch}, BaseImage: s.BaseImage, Timeout: 600,
	})
	return id, s.Server.Enqueue(id, arch, false)
}

// AgentYAML returns an agent.yaml for an agent of this stack with its data
// in dataDir: builders get the stack's meta-package repository.
func (s *Stack) AgentYAML(dataDir, arch string, slots int, pollEvery time.Duration) string {
	return fmt.Sprintf(`address: %s
api_key: %s
arch: %s
data_dir: %s
max_concurrent_builds: %d
polling_frequency: %s
log_level: INFO
shutdown_grace: 1m
build_timeout: 10m
pacman_repos:
  - name: %s
    servers: [%q]
    sig_level: Optional TrustAll
registries:
  insecure: [%q]
`, s.address, StackAPIKey, arch, dataDir, slots, pollEvery, DepsRepo, s.address+"/$repo/$arch", s.Registry.Host())
}

// WaitLogs waits until the server holds at least n logs, or ctx ends.
func (s *Stack) WaitLogs(ctx context.Context, n int) ([]vieterserver.Log, error) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		logs := s.Server.Logs()
		if len(logs) >= n {
			return logs, nil
		}
		select {
		case <-ctx.Done():
			return logs, fmt.Errorf("waiting for %d logs (have %d): %w", n, len(logs), context.Cause(ctx))
		case <-t.C:
		}
	}
}

// Close stops the servers. It is idempotent.
func (s *Stack) Close() error {
	var errs []error
	if s.http != nil {
		errs = append(errs, s.http.Close())
		s.http = nil
	}
	if s.Registry != nil {
		errs = append(errs, s.Registry.Close())
		s.Registry = nil
	}
	return errors.Join(errs...)
}

// DemoPKGBUILD returns a PKGBUILD for a tiny package: an `any` package that
// installs a text file, optionally depending on other packages.
func DemoPKGBUILD(name, ver string, depends ...string) string {
	deps := ""
	if len(depends) > 0 {
		deps = "depends=(" + strings.Join(depends, " ") + ")\n"
	}
	return fmt.Sprintf(`pkgname=%s
pkgver=%s
pkgrel=1
pkgdesc="vagent demo package %s"
arch=(any)
license=(MIT)
%s
package() {
  install -d "$pkgdir/usr/share/%s"
  echo "built by vagent" > "$pkgdir/usr/share/%s/README"
}
`, name, ver, name, deps, name, name)
}
