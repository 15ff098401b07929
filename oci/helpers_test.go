package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// tent is a tar entry for hand-built layers.
type tent struct {
	name   string
	typ    byte // tar.Type*; 0 means a regular file
	body   string
	link   string
	mode   int64
	uid    int
	gid    int
	mtime  time.Time
	xattrs map[string]string
	major  int64
	minor  int64
}

var testTime = time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

func file(name, body string) tent { return tent{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) tent        { return tent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) tent {
	return tent{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) tent { return tent{name: name, typ: tar.TypeLink, link: target} }

// tarOf builds an uncompressed layer.
func tarOf(t testing.TB, ents ...tent) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		mt := e.mtime
		if mt.IsZero() {
			mt = testTime
		}
		hdr := &tar.Header{
			Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode,
			Uid: e.uid, Gid: e.gid, ModTime: mt, Devmajor: e.major, Devminor: e.minor,
			Format: tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if len(e.xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range e.xattrs {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return zw.EncodeAll(b, nil)
}

// layerOf makes a layer of the given compression ("gzip", "zstd", "none").
func layerOf(t testing.TB, compression string, ents ...tent) v1.Layer {
	t.Helper()
	raw := tarOf(t, ents...)
	switch compression {
	case "gzip":
		return static.NewLayer(gzipped(t, raw), types.OCILayer)
	case "zstd":
		return static.NewLayer(zstded(t, raw), types.OCILayerZStd)
	default:
		return static.NewLayer(raw, types.OCIUncompressedLayer)
	}
}

// imageOf makes an OCI image for the running platform.
func imageOf(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testRegistry is an in-process registry that counts requests.
type testRegistry struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string // "METHOD path"
	handler  http.Handler
}

func newTestRegistry(t testing.TB) *testRegistry {
	t.Helper()
	r := &testRegistry{handler: registry.New(registry.Logger(nullLogger()))}
	r.Server = httptest.NewServer(r)
	t.Cleanup(r.Close)
	return r
}

func (r *testRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests = append(r.requests, req.Method+" "+req.URL.Path)
	r.mu.Unlock()
	r.handler.ServeHTTP(w, req)
}

// host is the registry's host:port.
func (r *testRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

// count returns the number of requests whose path contains part, and
// resets nothing.
func (r *testRegistry) count(part string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, q := range r.requests {
		if strings.Contains(q, part) {
			n++
		}
	}
	return n
}

func (r *testRegistry) reset() {
	r.mu.Lock()
	r.requests = nil
	r.mu.Unlock()
}

// push writes img to the registry as repo:tag and returns the reference.
func (r *testRegistry) push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(r.host() + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	r.reset()
	return ref.String()
}

func nullLogger() *log.Logger { return log.New(io.Discard, "", 0) }
