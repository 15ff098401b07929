package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/vieter-v/vagent/internal/vieterserver"
	"github.com/vieter-v/vagent/sandbox"
)

// scriptCmds are the commands testdata/script/*.txtar may use besides
// testscript's own: they make images and registries without network.
var scriptCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"mkimage":      cmdMkimage,
	"registry":     cmdRegistry,
	"vieterserver": cmdVieterServer,
	"freeport":     cmdFreePort,
	"waithttp":     cmdWaitHTTP,
	"status":       cmdStatus,
}

// cmdStatus: status N CMD [ARGS...]
//
// runs CMD as exec does and fails unless it exits with status N; stdout
// and stderr are CMD's for the lines that follow.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status N CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// scriptImage is a one-layer OCI image for the agent's platform holding
// /etc/os-release (ID=vagent-test), an /etc/pacman.conf whose repository
// names its server (no mirror list) and /bin/marker.
func scriptImage() (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mod := time.Unix(1700000000, 0)
	for _, e := range []struct {
		name, body string
		typ        byte
		mode       int64
	}{
		{"etc/", "", tar.TypeDir, 0o755},
		{"etc/os-release", "ID=vagent-test\n", tar.TypeReg, 0o644},
		// Repositories that name their servers: a mirror list is not used.
		{"etc/pacman.conf", "[options]\nArchitecture = auto\n\n[core]\nServer = https://elsewhere.example/$repo/os/$arch\n", tar.TypeReg, 0o644},
		{"bin/", "", tar.TypeDir, 0o755},
		{"bin/marker", "#!/bin/sh\necho marker\n", tar.TypeReg, 0o755},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)), ModTime: mod}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: mod}
	return mutate.ConfigFile(img, cf)
}

// cmdMkimage: mkimage LAYOUT TAG [DOCKER-ARCHIVE]
//
// writes the test image into the OCI layout directory LAYOUT, tagged TAG,
// and, when given, as `docker save` output into DOCKER-ARCHIVE.
func cmdMkimage(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: mkimage LAYOUT TAG [DOCKER-ARCHIVE]")
	}
	img, err := scriptImage()
	ts.Check(err)
	p, err := layout.Write(ts.MkAbs(args[0]), empty.Index)
	ts.Check(err)
	ts.Check(p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": args[1]})))
	if len(args) == 3 {
		tag, err := name.NewTag("vagent-test/image:" + args[1])
		ts.Check(err)
		ts.Check(tarball.WriteToFile(ts.MkAbs(args[2]), tag, img))
	}
}

// cmdRegistry: registry
//
// starts an in-memory registry on loopback for the rest of the script and
// sets $REGISTRY to its host:port.
func cmdRegistry(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: registry")
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	ts.Defer(srv.Close)
	ts.Setenv("REGISTRY", strings.TrimPrefix(srv.URL, "http://"))
}

// cmdVieterServer: vieterserver
//
// starts a Vieter test server (no jobs) for the rest of the script and sets
// $VIETER_ADDRESS to its URL and $VIETER_API_KEY_FILE to a file holding its
// API key.
func cmdVieterServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: vieterserver")
	}
	const key = "script-key-0123456789"
	srv, err := vieterserver.New(vieterserver.WithAPIKey(key))
	ts.Check(err)
	hs := httptest.NewServer(srv)
	ts.Defer(hs.Close)
	keyFile := ts.MkAbs("vieter-api-key")
	ts.Check(os.WriteFile(keyFile, []byte(key+"\n"), 0o600))
	ts.Setenv("VIETER_ADDRESS", hs.URL)
	ts.Setenv("VIETER_API_KEY_FILE", keyFile)
}

// cmdFreePort: freeport VAR
//
// sets $VAR to a loopback host:port where nothing listens.
func cmdFreePort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: freeport VAR")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	ts.Setenv(args[0], l.Addr().String())
	ts.Check(l.Close())
}

// cmdWaitHTTP: waithttp URL
//
// waits up to 30s for URL to answer 200.
func cmdWaitHTTP(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waithttp URL")
	}
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(args[0])
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		last = resp.Status
	}
	ts.Fatalf("%s did not answer 200 within 30s: %s", args[0], last)
}

// scriptCondition evaluates the conditions of testdata/script: root (the
// tests run as root, as CI does) and ci (CI is set: a missing tool must
// fail, not skip).
func scriptCondition(cond string) (bool, error) {
	switch cond {
	case "root":
		return os.Geteuid() == 0, nil
	case "ci":
		return os.Getenv("CI") != "", nil
	case "seccomp":
		return sandbox.SeccompSupported, nil
	}
	return false, fmt.Errorf("unknown condition %q", cond)
}
