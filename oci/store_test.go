package oci

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"

	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// withDial maps every host to addr (tests use host names for loopback
// servers).
func withDial(addr string) Option {
	return func(o *options) error {
		o.dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		return nil
	}
}

func newStore(t testing.TB, dir string, opts ...Option) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := NewStore(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func threeLayerImage(t testing.TB) v1.Image {
	return imageOf(t,
		layerOf(t, "gzip", dir("etc"), file("etc/os-release", "ID=test\n"), file("etc/gone", "x"), file("f", "layer 1")),
		layerOf(t, "zstd", file("etc/.wh.gone", ""), file("usr/bin/tool", "tool"), file("f", "layer 2")),
		layerOf(t, "none", symlink("bin", "usr/bin"), file("f", "layer 3")),
	)
}

func rootfsOf(t testing.TB, s *Store, ref string) *Rootfs {
	t.Helper()
	rf, err := s.Rootfs(t.Context(), ref)
	if err != nil {
		t.Fatalf("Rootfs(%s): %v", ref, err)
	}
	t.Cleanup(func() { rf.Release() })
	return rf
}

func checkThreeLayers(t testing.TB, dir string) {
	t.Helper()
	if got := readFile(t, filepath.Join(dir, "f")); got != "layer 3" {
		t.Errorf("f = %q, want the top layer's", got)
	}
	if got := readFile(t, filepath.Join(dir, "bin/tool")); got != "tool" {
		t.Errorf("bin/tool = %q", got)
	}
	if exists(t, filepath.Join(dir, "etc/gone")) {
		t.Errorf("etc/gone not whited out")
	}
}

// TestCachedPullMakesNoBlobRequest: once an image's blobs are in the store,
// pulling it again (even from a new Store on the same dir) asks the
// registry for its manifest only.
func TestCachedPullMakesNoBlobRequest(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.push(t, "test/cached:1", threeLayerImage(t))
	dir := t.TempDir()

	img, err := newStore(t, dir).Pull(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if n := reg.count("/blobs/"); n != 4 {
		t.Errorf("first pull: %d blob requests, want 4 (config and 3 layers)", n)
	}
	if len(img.Manifest.Layers) != 3 || img.Config.OS != "linux" {
		t.Errorf("image: %d layers, os %q", len(img.Manifest.Layers), img.Config.OS)
	}

	for _, op := range []string{"pull", "rootfs", "rootfs again"} {
		reg.reset()
		s := newStore(t, dir)
		if op == "pull" {
			if _, err := s.Pull(t.Context(), ref); err != nil {
				t.Fatal(err)
			}
		} else {
			checkThreeLayers(t, rootfsOf(t, s, ref).Dir)
		}
		if n := reg.count("/blobs/"); n != 0 {
			t.Errorf("%s of a cached image: %d blob requests, want 0: %v", op, n, reg.requests)
		}
		if n := reg.count("/manifests/"); n == 0 {
			t.Errorf("%s: the tag was not resolved again", op)
		}
	}
}

// corruptingHandler serves a wrong byte in one blob.
type corruptingHandler struct {
	http.Handler
	digest string
}

func (c corruptingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+c.digest) {
		rec := httptest.NewRecorder()
		c.Handler.ServeHTTP(rec, r)
		b := rec.Body.Bytes()
		b[len(b)/2] ^= 0xff
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(b)
		return
	}
	c.Handler.ServeHTTP(w, r)
}

func TestDigestMismatch(t *testing.T) {
	img := threeLayerImage(t)
	layers, _ := img.Layers()
	bad, _ := layers[1].Digest()
	reg := newTestRegistry(t)
	ref := reg.push(t, "test/corrupt:1", img)
	reg.handler = corruptingHandler{Handler: reg.handler, digest: bad.String()}

	dir := t.TempDir()
	s := newStore(t, dir)
	for _, op := range []string{"pull", "rootfs"} {
		var err error
		if op == "pull" {
			_, err = s.Pull(t.Context(), ref)
		} else {
			_, err = s.Rootfs(t.Context(), ref)
		}
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("%s: err = %v, want ErrDigestMismatch", op, err)
		}
		if s.hasBlob(bad) {
			t.Errorf("%s: the corrupt blob was cached", op)
		}
		if list, _ := s.List(); len(list) != 0 {
			t.Errorf("%s: the image was recorded: %v", op, list)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "rootfs")); len(ents) != 0 {
			t.Errorf("%s: a rootfs was published", op)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
			t.Errorf("%s: temporaries left: %d", op, len(ents))
		}
	}

	// A cached blob corrupted on disk is caught when unpacking, and dropped.
	reg.handler = registry.New(registry.Logger(nullLogger()))
	ref2 := reg.push(t, "test/corrupt:2", img)
	s2 := newStore(t, "")
	if _, err := s2.Pull(t.Context(), ref2); err != nil {
		t.Fatal(err)
	}
	p, _ := s2.blobPath(bad)
	os.Chmod(p, 0o644)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0xff
	os.WriteFile(p, b, 0o444)
	if _, err := s2.Rootfs(t.Context(), ref2); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("rootfs from a corrupt cache: err = %v, want ErrDigestMismatch", err)
	}
	if s2.hasBlob(bad) {
		t.Errorf("the corrupt cached blob was kept")
	}
	checkThreeLayers(t, rootfsOf(t, s2, ref2).Dir) // fetched again
}

func TestMirrors(t *testing.T) {
	img := threeLayerImage(t)
	origin := newTestRegistry(t)
	ref := origin.push(t, "team/app:1", img)
	empty := newTestRegistry(t) // a mirror without the image
	full := newTestRegistry(t)  // a mirror with it
	full.push(t, "team/app:1", img)
	dead := closedAddr(t)

	t.Run("first mirror that has it wins", func(t *testing.T) {
		origin.reset()
		s := newStore(t, "", WithMirrors(origin.host(), "http://"+dead, empty.host(), full.host()))
		checkThreeLayers(t, rootfsOf(t, s, ref).Dir)
		if empty.count("/manifests/") == 0 {
			t.Errorf("the empty mirror was not tried")
		}
		if n := full.count("/blobs/"); n != 4 {
			t.Errorf("the full mirror served %d blobs, want 4", n)
		}
		if n := len(origin.requests); n != 0 {
			t.Errorf("origin got %d requests, want none", n)
		}
	})
	t.Run("falls back to the origin", func(t *testing.T) {
		origin.reset()
		empty.reset()
		s := newStore(t, "", WithMirrors(origin.host(), "http://"+dead, empty.host()))
		checkThreeLayers(t, rootfsOf(t, s, ref).Dir)
		if empty.count("/manifests/") == 0 {
			t.Errorf("the empty mirror was not tried")
		}
		if origin.count("/blobs/") != 4 {
			t.Errorf("origin served %d blobs, want 4", origin.count("/blobs/"))
		}
	})
	t.Run("unreachable names every endpoint tried", func(t *testing.T) {
		dead2 := closedAddr(t)
		s := newStore(t, "", WithMirrors(dead2, "http://"+dead, "http://"+dead+"9"))
		_, err := s.Pull(t.Context(), dead2+"/team/app:1")
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
		for _, want := range []string{"mirror " + dead, "mirror " + dead + "9", dead2 + ":"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
		}
	})
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestInsecureAndCABundle(t *testing.T) {
	img := threeLayerImage(t)

	t.Run("plain http needs insecure", func(t *testing.T) {
		reg := newTestRegistry(t)
		reg.push(t, "x/y:1", img)
		_, port, _ := net.SplitHostPort(reg.host())
		host := "registry.test:" + port // not loopback: https by default
		ref := host + "/x/y:1"
		_, err := newStore(t, "", withDial(reg.host())).Pull(t.Context(), ref)
		if err == nil {
			t.Fatal("pulled over plain http without --insecure")
		}
		if !errors.Is(err, ErrUnreachable) {
			t.Errorf("err = %v, want ErrUnreachable", err)
		}
		if _, err := newStore(t, "", withDial(reg.host()), WithInsecure(host)).Pull(t.Context(), ref); err != nil {
			t.Fatalf("insecure pull: %v", err)
		}
	})

	tlsReg := httptest.NewTLSServer(registry.New(registry.Logger(nullLogger())))
	t.Cleanup(tlsReg.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(tlsReg.URL, "https://"))
	host := "example.com:" + port // httptest's certificate names example.com
	pushRef, _ := name.ParseReference(host + "/x/y:1")
	dialer := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, strings.TrimPrefix(tlsReg.URL, "https://"))
	}
	tr := tlsReg.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = dialer
	if err := remote.Write(pushRef, img, remote.WithTransport(tr)); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsReg.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := pushRef.String()
	dial := withDial(strings.TrimPrefix(tlsReg.URL, "https://"))

	t.Run("unknown certificate authority", func(t *testing.T) {
		_, err := newStore(t, "", dial).Pull(t.Context(), ref)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want a certificate error", err)
		}
	})
	t.Run("ca bundle", func(t *testing.T) {
		if _, err := newStore(t, "", dial, WithCABundle(ca)).Pull(t.Context(), ref); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("insecure skips verification", func(t *testing.T) {
		if _, err := newStore(t, "", dial, WithInsecure(host)).Pull(t.Context(), ref); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bad ca bundle", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.pem")
		os.WriteFile(bad, []byte("not pem"), 0o644)
		if _, err := NewStore(t.TempDir(), WithCABundle(bad)); err == nil {
			t.Error("NewStore accepted a CA bundle without certificates")
		}
	})
}

// basicAuth requires a username and password.
func basicAuth(h http.Handler, user, pass string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func TestAuth(t *testing.T) {
	img := threeLayerImage(t)
	reg := newTestRegistry(t)
	ref := reg.push(t, "private/app:1", img)
	reg.handler = basicAuth(reg.handler, "alice", "s3cret")
	host := reg.host()

	dockerConfig := func(user, pass string) string {
		p := filepath.Join(t.TempDir(), "config.json")
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		os.WriteFile(p, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, host, auth), 0o600)
		return p
	}
	empty := filepath.Join(t.TempDir(), "empty.json")
	os.WriteFile(empty, []byte(`{}`), 0o600)

	tests := []struct {
		name string
		opts []Option
		want error
	}{
		{"anonymous", []Option{WithDockerConfig(empty)}, ErrUnauthorized},
		{"explicit credentials", []Option{WithCredentials(host, "alice", "s3cret")}, nil},
		{"wrong password", []Option{WithCredentials(host, "alice", "nope")}, ErrUnauthorized},
		{"docker config", []Option{WithDockerConfig(dockerConfig("alice", "s3cret"))}, nil},
		{"docker config, wrong password", []Option{WithDockerConfig(dockerConfig("alice", "x"))}, ErrUnauthorized},
		{"explicit credentials win", []Option{WithDockerConfig(dockerConfig("alice", "x")), WithCredentials(host, "alice", "s3cret")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newStore(t, "", tt.opts...).Pull(t.Context(), ref)
			if tt.want == nil && err != nil {
				t.Fatal(err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the password is in the error: %v", err)
			}
		})
	}
}

func TestUnknownImage(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "exists:1", threeLayerImage(t))
	s := newStore(t, "")
	for _, ref := range []string{reg.host() + "/exists:2", reg.host() + "/nothing:1", reg.host() + "/exists@sha256:" + strings.Repeat("a", 64)} {
		_, err := s.Pull(t.Context(), ref)
		if !errors.Is(err, ErrUnknownImage) {
			t.Errorf("%s: err = %v, want ErrUnknownImage", ref, err)
		}
	}
	if _, err := s.Pull(t.Context(), "UPPER/case"); !errors.Is(err, ErrBadReference) {
		t.Errorf("bad reference: err = %v", err)
	}
}

func platformImage(t testing.TB, arch string) v1.Image {
	img := imageOf(t, layerOf(t, "gzip", file("arch", arch)))
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = arch
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func multiPlatformIndex(t testing.TB) v1.ImageIndex {
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"arm64", "amd64", "riscv64"} {
		adds = append(adds, mutate.IndexAddendum{Add: platformImage(t, arch), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	// An attestation manifest, as buildkit adds.
	adds = append([]mutate.IndexAddendum{{Add: platformImage(t, "none"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}}}, adds...)
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
}

func TestPlatformSelection(t *testing.T) {
	reg := newTestRegistry(t)
	ref, _ := name.ParseReference(reg.host() + "/multi:1")
	if err := remote.WriteIndex(ref, multiPlatformIndex(t)); err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"amd64", "arm64", "riscv64"} {
		s := newStore(t, "", WithPlatform(v1.Platform{OS: "linux", Architecture: arch}))
		rf := rootfsOf(t, s, ref.String())
		if got := readFile(t, filepath.Join(rf.Dir, "arch")); got != arch {
			t.Errorf("platform %s: got the %s image", arch, got)
		}
	}
	if runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64" {
		if got := readFile(t, filepath.Join(rootfsOf(t, newStore(t, ""), ref.String()).Dir, "arch")); got != runtime.GOARCH {
			t.Errorf("default platform: got the %s image", got)
		}
	}
	_, err := newStore(t, "", WithPlatform(v1.Platform{OS: "linux", Architecture: "s390x"})).Pull(t.Context(), ref.String())
	if !errors.Is(err, ErrUnknownImage) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Errorf("missing platform: err = %v", err)
	}
}

func TestLocalSources(t *testing.T) {
	img := threeLayerImage(t)
	tmp := t.TempDir()

	// An OCI layout holding a tagged image and a tagged index.
	lp := filepath.Join(tmp, "layout")
	p, err := layout.Write(lp, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: "v1"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(multiPlatformIndex(t), layout.WithAnnotations(map[string]string{refNameAnnotation: "multi"})); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()

	// The same layout as a tarball, and a docker-archive.
	oa := filepath.Join(tmp, "image.oci.tar")
	tarDir(t, lp, oa)
	da := filepath.Join(tmp, "image.docker.tar")
	tag, _ := name.NewTag("example.com/app:1")
	if err := tarball.WriteToFile(da, tag, img); err != nil {
		t.Fatal(err)
	}

	for _, ref := range []string{"oci:" + lp + ":v1", "oci:" + lp + "@" + d.String(), "oci-archive:" + oa + ":v1", "docker-archive:" + da} {
		t.Run(ref[:strings.Index(ref, ":")], func(t *testing.T) {
			rf := rootfsOf(t, newStore(t, ""), ref)
			checkThreeLayers(t, rf.Dir)
			if strings.HasPrefix(ref, "oci") && rf.Digest != d {
				t.Errorf("digest %s, want %s", rf.Digest, d)
			}
		})
	}
	for _, ref := range []string{"oci:" + lp + ":multi", "oci-archive:" + oa + ":multi"} {
		s := newStore(t, "", WithPlatform(v1.Platform{OS: "linux", Architecture: "riscv64"}))
		if got := readFile(t, filepath.Join(rootfsOf(t, s, ref).Dir, "arch")); got != "riscv64" {
			t.Errorf("%s: got the %s image", ref, got)
		}
	}
	for _, ref := range []string{"oci:" + lp, "oci:" + lp + ":nope", "oci:" + tmp + "/missing:v1", "oci-archive:" + tmp + "/missing.tar", "docker-archive:" + tmp + "/missing.tar"} {
		if _, err := newStore(t, "").Pull(t.Context(), ref); !errors.Is(err, ErrUnknownImage) {
			t.Errorf("%s: err = %v, want ErrUnknownImage", ref, err)
		}
	}
}

// tarDir writes the files under dir into a tarball.
func tarDir(t testing.TB, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := d.Info()
		hdr, _ := tar.FileInfoHeader(fi, "")
		hdr.Name = rel
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			tw.Write(b)
		}
		return nil
	})
	if err != nil || tw.Close() != nil {
		t.Fatal(err)
	}
}

// slowHandler holds back one blob until released, and records how many
// blob downloads run at once.
type slowHandler struct {
	http.Handler
	digest       string
	release      chan struct{}
	wantParallel bool
	inflight     atomic.Int32
	peak         atomic.Int32
	order        []string
	mu           sync.Mutex
}

func (h *slowHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		n := h.inflight.Add(1)
		defer h.inflight.Add(-1)
		for {
			p := h.peak.Load()
			if n <= p || h.peak.CompareAndSwap(p, n) {
				break
			}
		}
		// Wait (a little) for a second download to show up, so that
		// tiny blobs on a busy host still overlap if they can.
		for deadline := time.Now().Add(time.Second); h.wantParallel && h.peak.Load() < 2 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if strings.HasSuffix(r.URL.Path, h.digest) {
			select {
			case <-h.release:
			case <-r.Context().Done():
				return
			}
		}
		h.mu.Lock()
		h.order = append(h.order, r.URL.Path[strings.LastIndex(r.URL.Path, ":")+1:])
		h.mu.Unlock()
	}
	h.Handler.ServeHTTP(w, r)
}

// TestParallelDownloadInOrderApply: the bottom layer arrives last, yet the
// layers are applied bottom first.
func TestParallelDownloadInOrderApply(t *testing.T) {
	var ls []v1.Layer
	for i := range 4 {
		ls = append(ls, layerOf(t, "gzip", file("f", fmt.Sprintf("layer %d", i)), file(fmt.Sprintf("only%d", i), "")))
	}
	img := imageOf(t, ls...)
	first, _ := ls[0].Digest()
	reg := newTestRegistry(t)
	ref := reg.push(t, "par:1", img)
	slow := &slowHandler{Handler: reg.handler, digest: first.Hex, release: make(chan struct{}), wantParallel: true}
	reg.handler = slow
	go func() {
		// Let the other downloads finish first.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			slow.mu.Lock()
			n := len(slow.order)
			slow.mu.Unlock()
			if n >= 4 { // the config and the three other layers
				break
			}
		}
		close(slow.release)
	}()
	rf := rootfsOf(t, newStore(t, "", WithParallelDownloads(4)), ref)
	if got := readFile(t, filepath.Join(rf.Dir, "f")); got != "layer 3" {
		t.Errorf("f = %q, want the top layer's", got)
	}
	if p := slow.peak.Load(); p < 2 {
		t.Errorf("at most %d blob download at once, want parallel downloads", p)
	}
	slow.mu.Lock()
	defer slow.mu.Unlock()
	if len(slow.order) != 5 || slow.order[4] != first.Hex { // config, then layers
		t.Errorf("the held-back bottom layer was not last to arrive: %v", slow.order)
	}
}

// TestRootfsCrashSafety: a rootfs is published whole or not at all; the
// leftovers of a crash are removed by NewStore and never used, while a
// temporary still locked by a live writer is kept.
func TestRootfsCrashSafety(t *testing.T) {
	img := threeLayerImage(t)
	reg := newTestRegistry(t)
	ref := reg.push(t, "crash:1", img)
	d, _ := img.Digest()
	dir := t.TempDir()
	newStore(t, dir) // creates the layout

	// A crashed unpack left a half tree (no lock held any more).
	stale := filepath.Join(dir, "tmp", "rootfs-123")
	os.MkdirAll(filepath.Join(stale, "rootfs", "etc"), 0o755)
	os.WriteFile(filepath.Join(stale, "rootfs", "etc", "half"), nil, 0o644)
	os.Chmod(filepath.Join(stale, "rootfs", "etc"), 0o555)
	staleBlob := filepath.Join(dir, "tmp", "blob-456")
	os.WriteFile(staleBlob, []byte("partial"), 0o644)
	// A temporary of a writer still running: locked.
	live := filepath.Join(dir, "tmp", "rootfs-live")
	os.Mkdir(live, 0o700)
	lf, _ := os.Open(live)
	defer lf.Close()
	if ok, err := flock(lf, true, false); !ok || err != nil {
		t.Fatal(ok, err)
	}

	s := newStore(t, dir)
	for _, p := range []string{stale, staleBlob} {
		if exists(t, p) {
			t.Errorf("stale %s not removed", p)
		}
	}
	if !exists(t, live) {
		t.Errorf("a live writer's temporary was removed")
	}

	// A pull interrupted in the middle publishes nothing.
	first, _ := func() (v1.Hash, error) { l, _ := img.Layers(); return l[2].Digest() }()
	slow := &slowHandler{Handler: reg.handler, digest: first.Hex, release: make(chan struct{})}
	reg.handler = slow
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		// The layer's blob is held in flight by the handler: the pull
		// is in the middle when it is cancelled.
		for slow.inflight.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := s.Rootfs(ctx, ref); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted rootfs: err = %v", err)
	}
	if exists(t, filepath.Join(dir, "rootfs", d.Hex)) {
		t.Fatal("an interrupted unpack was published")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 1 {
		t.Errorf("temporaries left after an interrupted unpack: %d, want only the live one", len(ents))
	}
	close(slow.release)
	rf := rootfsOf(t, s, ref)
	checkThreeLayers(t, rf.Dir)
	if rf.Dir != filepath.Join(dir, "rootfs", d.Hex) {
		t.Errorf("rootfs dir %s", rf.Dir)
	}
}

func TestConcurrentRootfs(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.push(t, "conc:1", threeLayerImage(t))
	dir := t.TempDir()
	var wg sync.WaitGroup
	dirs := make([]string, 4)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := newStore(t, dir) // as if from separate processes
			rf, err := s.Rootfs(t.Context(), ref)
			if err != nil {
				t.Error(err)
				return
			}
			defer rf.Release()
			dirs[i] = rf.Dir
			checkThreeLayers(t, rf.Dir)
		}()
	}
	wg.Wait()
	for _, d := range dirs[1:] {
		if d != dirs[0] {
			t.Errorf("different rootfs dirs: %v", dirs)
		}
	}
}

func TestListRemovePrune(t *testing.T) {
	reg := newTestRegistry(t)
	a := reg.push(t, "a:1", threeLayerImage(t))
	b := reg.push(t, "b:1", imageOf(t, layerOf(t, "gzip", file("b", "b"))))
	dir := t.TempDir()
	s := newStore(t, dir)
	rfA := rootfsOf(t, s, a)
	if _, err := s.Pull(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(t.Context(), reg.host()+"/a:1"); err != nil { // same image, same ref
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Ref != a || !list[0].Unpacked || list[1].Unpacked || list[0].Size <= 0 {
		t.Fatalf("list = %+v", list)
	}

	// Removing an image whose rootfs is in use keeps the tree.
	if err := s.Remove(a); err != nil {
		t.Fatal(err)
	}
	if !exists(t, rfA.Dir) {
		t.Error("a rootfs in use was removed")
	}
	if err := s.Remove(a); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: err = %v", err)
	}
	rfA.Release()
	rep, err := s.Prune(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rootfs != 1 || exists(t, rfA.Dir) {
		t.Errorf("prune = %+v; rootfs still there: %v", rep, exists(t, rfA.Dir))
	}
	if list, _ := s.List(); len(list) != 1 || list[0].Ref != b {
		t.Errorf("list after remove = %+v", list)
	}
	// b's blobs survive, a's are gone.
	blobs, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if len(blobs) != 3 { // b's manifest, config and layer
		t.Errorf("%d blobs left, want 3", len(blobs))
	}
	if err := s.Remove(b); err != nil {
		t.Fatal(err)
	}
	if blobs, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256")); len(blobs) != 0 {
		t.Errorf("%d blobs left after removing everything", len(blobs))
	}
}

func TestOfflineFallback(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.push(t, "off:1", threeLayerImage(t))
	dir := t.TempDir()
	rf := rootfsOf(t, newStore(t, dir), ref)
	reg.Close()
	rf2 := rootfsOf(t, newStore(t, dir), ref)
	if rf2.Dir != rf.Dir {
		t.Errorf("offline rootfs %s, want %s", rf2.Dir, rf.Dir)
	}
}

func TestDiskFull(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := mountTmpfs(dir, "256k"); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unmount(dir) })
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7 % 251)
	}
	reg := newTestRegistry(t)
	ref := reg.push(t, "big:1", imageOf(t, layerOf(t, "none", file("big", string(big)))))
	_, err := newStore(t, dir).Pull(t.Context(), ref)
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("err = %v, want ErrDiskFull", err)
	}
	if !strings.Contains(err.Error(), "disk full") {
		t.Errorf("error %q does not say the disk is full", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("temporaries left: %d", len(ents))
	}
}

func TestStoreIDShift(t *testing.T) {
	requireRoot(t)
	reg := newTestRegistry(t)
	ref := reg.push(t, "shift:1", imageOf(t, layerOf(t, "gzip", tent{name: "f", typ: tar.TypeReg, uid: 1000, gid: 1000, body: "x"})))
	dir := t.TempDir()
	plain := rootfsOf(t, newStore(t, dir), ref)
	shifted := rootfsOf(t, newStore(t, dir, WithUnpackOptions(WithIDShift(100000, 200000))), ref)
	if plain.Dir == shifted.Dir || !strings.HasSuffix(shifted.Dir, "-100000-200000") {
		t.Fatalf("shifted tree %s, plain %s: want separate trees", shifted.Dir, plain.Dir)
	}
	for dir, want := range map[string][2]uint32{plain.Dir: {1000, 1000}, shifted.Dir: {101000, 201000}} {
		if st := lstat(t, filepath.Join(dir, "f")); st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s: owner %d:%d, want %d:%d", dir, st.Uid, st.Gid, want[0], want[1])
		}
	}
}

// TestRootfsAfterReboot: a tree published without a flush is trusted in
// the boot that wrote it only; a flushed one (WithSync) always.
func TestRootfsAfterReboot(t *testing.T) {
	reg := newTestRegistry(t)
	ref := reg.push(t, "boot:1", threeLayerImage(t))
	dir := t.TempDir()
	rf := rootfsOf(t, newStore(t, dir), ref)
	rf.Release()
	mark := rf.Dir + markSuffix
	if b, _ := os.ReadFile(mark); strings.TrimSpace(string(b)) != bootID() {
		t.Fatalf("mark = %q, want this boot's id", b)
	}
	sentinel := filepath.Join(rf.Dir, "sentinel")
	for _, c := range []struct {
		mark string // "" removes it
		kept bool
	}{
		{bootID(), true},
		{"an-earlier-boot", false},
		{"", false},
		{syncedMark, true},
	} {
		os.WriteFile(sentinel, nil, 0o644)
		if c.mark == "" {
			os.Remove(mark)
		} else {
			os.WriteFile(mark, []byte(c.mark+"\n"), 0o644)
		}
		rf := rootfsOf(t, newStore(t, dir), ref)
		if got := exists(t, sentinel); got != c.kept {
			t.Errorf("mark %q: tree kept = %v, want %v", c.mark, got, c.kept)
		}
		checkThreeLayers(t, rf.Dir)
		rf.Release()
	}

	dir2 := t.TempDir()
	rf2 := rootfsOf(t, newStore(t, dir2, WithSync(true)), ref)
	if b, _ := os.ReadFile(rf2.Dir + markSuffix); strings.TrimSpace(string(b)) != syncedMark {
		t.Errorf("WithSync(true): mark = %q, want %q", b, syncedMark)
	}
}

// TestStoreDirModes: image trees hold setuid-root files, so every
// directory of the store is 0700 (even one an earlier version made 0755);
// the data directory NewStore creates above it stays searchable, because
// the sandbox's mapped root traverses it to reach runs/. Builds do not
// need the store's path (the agent mounts a tree as root). See also
// TestImageTreesUnreachable.
func TestStoreDirModes(t *testing.T) {
	base := t.TempDir()
	os.Chmod(base, 0o755)
	dir := filepath.Join(base, "data", "images")
	newStore(t, dir)
	if fi, err := os.Stat(filepath.Join(base, "data")); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm()&0o001 == 0 {
		t.Errorf("data dir: mode %v, not searchable by others", fi.Mode())
	}
	check := func() {
		t.Helper()
		for _, d := range []string{"", "blobs", "blobs/sha256", "rootfs", "tmp"} {
			fi, err := os.Stat(filepath.Join(dir, d))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("images/%s: mode %v, want 0700", d, fi.Mode())
			}
		}
	}
	check()
	// A store left 0755 by an earlier version is closed at the next start.
	for _, d := range []string{"", "blobs", "blobs/sha256", "rootfs"} {
		if err := os.Chmod(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	newStore(t, dir)
	check()
}
