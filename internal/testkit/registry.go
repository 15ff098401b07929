package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// RegistryBinary is the program StartRegistry runs: Debian's
// docker-registry (CNCF distribution 2.8).
const RegistryBinary = "docker-registry"

// Registry is a docker-registry process serving plain HTTP on 127.0.0.1
// without authentication, storing blobs in a directory of its own.
type Registry struct {
	host    string // 127.0.0.1:PORT
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	close   func() error
}

// Host returns the registry's host:port, for references such as
// Host()+"/test/busybox:latest".
func (r *Registry) Host() string { return r.host }

// URL returns the registry's base URL (http://127.0.0.1:PORT).
func (r *Registry) URL() string { return "http://" + r.host }

// Dir returns the directory holding the registry's config, log and storage.
func (r *Registry) Dir() string { return r.dir }

// Close stops the registry: SIGTERM, a short grace, then SIGKILL. It is
// idempotent.
func (r *Registry) Close() error { return r.close() }

// registryConfig is the registry's own configuration: no auth, loopback
// only, filesystem storage, deletes allowed, no debug server.
const registryConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`

// StartRegistry starts docker-registry on a free loopback port with its
// config, log and storage in dir, and waits until it answers /v2/. ctx
// bounds the start only; stop the registry with Close.
func StartRegistry(ctx context.Context, dir string) (*Registry, error) {
	bin, err := exec.LookPath(RegistryBinary)
	if err != nil {
		return nil, fmt.Errorf("starting registry: %w: %s (Debian package docker-registry)", ErrToolMissing, RegistryBinary)
	}
	// A free port can be taken between our probe and the registry's bind:
	// retry a few times with a new port when the process exits early.
	var lastErr error
	for range 3 {
		r, err := startRegistry(ctx, bin, dir)
		if err == nil {
			return r, nil
		}
		lastErr = err
		if !errors.Is(err, ErrRegistryExited) {
			break
		}
	}
	return nil, lastErr
}

func startRegistry(ctx context.Context, bin, dir string) (_ *Registry, retErr error) {
	host, err := freeLoopbackAddr()
	if err != nil {
		return nil, fmt.Errorf("starting registry: %w", err)
	}
	storage := filepath.Join(dir, "storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return nil, fmt.Errorf("starting registry: %w", err)
	}
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, registryConfig, strconv.Quote(storage), host), 0o644); err != nil {
		return nil, fmt.Errorf("starting registry: %w", err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, fmt.Errorf("starting registry: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor

	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	setRegistrySysProcAttr(cmd)
	if err := startProcess(cmd); err != nil {
		return nil, fmt.Errorf("starting registry: %w", err)
	}
	r := &Registry{host: host, dir: dir, cmd: cmd, exited: make(chan struct{})}
	go func() {
		r.waitErr = cmd.Wait()
		close(r.exited)
	}()
	r.close = sync.OnceValue(func() error {
		select {
		case <-r.exited:
			return nil
		default:
		}
		_ = cmd.Process.Signal(terminateSignal)
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-r.exited
		}
		return nil
	})
	defer func() {
		if retErr != nil {
			_ = r.close()
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/", nil)
		if err != nil {
			return nil, fmt.Errorf("starting registry: %w", err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
			return nil, fmt.Errorf("starting registry: /v2/ answered %s", resp.Status)
		}
		select {
		case <-r.exited:
			return nil, fmt.Errorf("starting registry on %s: %w: %v: %s", host, ErrRegistryExited, r.waitErr, r.logTail())
		case <-ctx.Done():
			return nil, fmt.Errorf("starting registry on %s: no answer: %w: %s", host, context.Cause(ctx), r.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// logTail returns the end of the registry's log, for error messages.
func (r *Registry) logTail() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "registry.log"))
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartTestRegistry starts a registry for tb in a temporary directory and
// stops it when tb ends. It skips tb when docker-registry is not installed,
// unless InCI, where that is a failure.
func StartTestRegistry(tb testing.TB) *Registry {
	tb.Helper()
	RequireTool(tb, RegistryBinary, "docker-registry")
	r, err := StartRegistry(tb.Context(), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	return r
}
