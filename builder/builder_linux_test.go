package builder_test

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/sys/unix"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/pacman"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// layoutImage returns the image tagged ref in the builders' layout.
func layoutImage(t testing.TB, m *builder.Manager, ref string) (v1.Image, v1.Descriptor) {
	t.Helper()
	p, err := layout.FromPath(m.LayoutDir())
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == ref {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img, d
		}
	}
	t.Fatalf("no image tagged %s in the layout (%d entries)", ref, len(im.Manifests))
	return nil, v1.Descriptor{}
}

// layerEntries reads a layer's tar: name -> header.
func layerEntries(t testing.TB, l v1.Layer) map[string]*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(h.Name, "/")] = h
	}
}

func TestAcquirePreparesBuilder(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := pushed(t, reg, "fake", fakeBase(t, nil))
	var log sandboxtest.Buffer
	l, err := e.m.Acquire(t.Context(), base, &log)
	if err != nil {
		t.Fatalf("Acquire: %v\n%s", err, log.String())
	}
	defer l.Release()
	if l.Base != base || l.Created.IsZero() || l.Digest.Hex == "" || l.BaseDigest.Hex == "" {
		t.Errorf("lease %+v", l)
	}
	for _, want := range []string{
		"fake pacman: -Syu --needed --noconfirm --noprogressbar base-devel git",
		"pacman has no DisableSandbox option",
		"==> builder setup done",
	} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("setup log lacks %q:\n%s", want, log.String())
		}
	}

	// The rootfs: what the setup did.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(l.Rootfs, "build"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000 || st.Gid != 1000 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("/build: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode)
	}
	if got := readFile(t, l.Rootfs, "etc/sudoers.d/builder"); got != "builder ALL=(ALL) NOPASSWD: ALL\n" {
		t.Errorf("sudoers: %q", got)
	}
	if got := readFile(t, l.Rootfs, "usr/share/fake-pacman/git"); got != "installed git\n" {
		t.Errorf("installed: %q", got)
	}
	for _, gone := range []string{"opt/old", "opt/replaced/x", "var/cache/pacman/pkg/old-1-1-any.pkg.tar.zst", "etc/resolv.conf", "etc/hosts"} {
		if _, err := os.Lstat(filepath.Join(l.Rootfs, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it absent", gone, err)
		}
	}
	if got := readFile(t, l.Rootfs, "opt/changed"); got != "v1\nupgraded\n" {
		t.Errorf("opt/changed: %q", got)
	}

	// The image in the layout: valid, tagged with the base, base layers
	// plus one.
	img, desc := layoutImage(t, e.m, builder.LayoutTag(base))
	if desc.Digest != l.Digest {
		t.Errorf("layout digest %s, lease %s", desc.Digest, l.Digest)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("validate.Image: %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 3 {
		t.Fatalf("%d layers, want busybox + fake pacman + builder", len(layers))
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.History); n == 0 || !strings.Contains(cfg.History[n-1].CreatedBy, "pacman -Syu --needed --noconfirm base-devel git") {
		t.Errorf("history: %+v", cfg.History)
	}
	if cfg.Config.Labels["dev.vieter.vagent.base"] != base {
		t.Errorf("labels: %v", cfg.Config.Labels)
	}

	// The builder layer: whiteouts, an opaque directory, owners shifted
	// back, hardlinks kept, no mount points.
	ents := layerEntries(t, layers[2])
	for name, typ := range map[string]byte{
		"opt/.wh.old":               tar.TypeReg,
		"opt/replaced/.wh..wh..opq": tar.TypeReg,
		"opt/replaced/new":          tar.TypeReg,
		"opt/replaced/link":         tar.TypeSymlink,
		"opt/fifo":                  tar.TypeFifo,
		"build":                     tar.TypeDir,
		"var/cache/pacman/pkg/.wh.old-1-1-any.pkg.tar.zst": tar.TypeReg,
	} {
		h, ok := ents[name]
		if !ok {
			t.Errorf("layer lacks %s", name)
			continue
		}
		if h.Typeflag != typ {
			t.Errorf("%s: type %q, want %q", name, h.Typeflag, typ)
		}
	}
	if h := ents["build"]; h != nil && (h.Uid != 1000 || h.Gid != 1000) {
		t.Errorf("build: owner %d:%d", h.Uid, h.Gid)
	}
	if h := ents["opt/changed"]; h == nil || h.Uid != 0 || h.Mode != 0o600 {
		t.Errorf("opt/changed: %+v", h)
	}
	h1, h2 := ents["opt/hl1"], ents["opt/hl2"]
	if h1 == nil || h2 == nil || !((h1.Typeflag == tar.TypeLink && h1.Linkname == "opt/hl2") || (h2.Typeflag == tar.TypeLink && h2.Linkname == "opt/hl1")) {
		t.Errorf("hardlinks: %+v %+v", h1, h2)
	}
	for _, name := range []string{"tmp", "etc/resolv.conf", "etc/hosts", "proc", "dev", "sys"} {
		if _, ok := ents[name]; ok {
			t.Errorf("layer has the sandbox's mount point %s", name)
		}
	}
	for name, h := range ents {
		for k := range h.PAXRecords {
			if strings.Contains(k, "overlay") {
				t.Errorf("%s carries %s", name, k)
			}
		}
	}

	infos, err := e.m.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || !infos[0].Current || infos[0].Stale || !infos[0].InUse || infos[0].Digest != l.Digest {
		t.Errorf("List: %+v", infos)
	}
	l.Release()
	l.Release() // idempotent
	if infos, _ := e.m.List(); len(infos) != 1 || infos[0].InUse {
		t.Errorf("List after Release: %+v", infos)
	}
}

// TestDisableSandboxDetection runs the setup on a pacman that knows
// DisableSandbox (pacman 7's pacman-conf answers) and on one that does not
// (pacman 6's): only the first gets it, in [options].
func TestDisableSandboxDetection(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	for _, tc := range []struct {
		name    string
		flags   map[string]string
		want    string
		wantLog string
	}{
		{"pacman6", nil, fakePacmanConfFile, "pacman has no DisableSandbox option"},
		{"pacman7", map[string]string{"v7": ""}, strings.Replace(fakePacmanConfFile, "[options]\n", "[options]\nDisableSandbox\n", 1), "pacman supports DisableSandbox: turning it on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := pushed(t, reg, tc.name, fakeBase(t, tc.flags))
			var log sandboxtest.Buffer
			l, err := e.m.Acquire(t.Context(), base, &log)
			if err != nil {
				t.Fatalf("Acquire: %v\n%s", err, log.String())
			}
			defer l.Release()
			if d := cmp.Diff(tc.want, readFile(t, l.Rootfs, "etc/pacman.conf")); d != "" {
				t.Errorf("pacman.conf (-want +got):\n%s", d)
			}
			if !strings.Contains(log.String(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, log.String())
			}
		})
	}
}

func TestMirrorListAndRepos(t *testing.T) {
	e := newEnv(t,
		builder.WithMirrorList("https://mirror.example/$repo/os/$arch", "http://10.0.0.1/arch/$repo/os/$arch"),
		builder.WithRepos(pacman.Repo{Name: "local", Servers: []string{"http://127.0.0.1:1/$repo/$arch"}, SigLevel: "Optional  TrustAll"}),
		builder.WithPackages("base-devel", "git", "extra/vim"))
	reg := startRegistry(t)
	base := pushed(t, reg, "fake", fakeBase(t, nil))
	var log sandboxtest.Buffer
	l, err := e.m.Acquire(t.Context(), base, &log)
	if err != nil {
		t.Fatalf("Acquire: %v\n%s", err, log.String())
	}
	defer l.Release()
	want := "# Written by vagent (mirror list of its configuration).\nServer = https://mirror.example/$repo/os/$arch\nServer = http://10.0.0.1/arch/$repo/os/$arch\n"
	if d := cmp.Diff(want, readFile(t, l.Rootfs, "etc/pacman.d/mirrorlist")); d != "" {
		t.Errorf("mirrorlist (-want +got):\n%s", d)
	}
	want = fakePacmanConfFile + "\n[local]\nSigLevel = Optional TrustAll\nServer = http://127.0.0.1:1/$repo/$arch\n\n"
	if d := cmp.Diff(want, readFile(t, l.Rootfs, "etc/pacman.conf")); d != "" {
		t.Errorf("pacman.conf (-want +got):\n%s", d)
	}
	if !strings.Contains(log.String(), "fake pacman: -Syu --needed --noconfirm --noprogressbar base-devel git extra/vim") {
		t.Errorf("log:\n%s", log.String())
	}
}

// stageLog records the stages of the preparations it follows.
type stageLog struct {
	sandboxtest.Buffer
	mu     sync.Mutex
	stages []builder.Stage
}

func (s *stageLog) Stage(st builder.Stage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stages = append(s.stages, st)
}

// TestAcquireStages: a log that is a StageWriter hears a preparation's
// stages, pulling then preparing; a fresh builder is leased without any.
func TestAcquireStages(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := pushed(t, reg, "stages", fakeBase(t, nil))
	for i, want := range [][]builder.Stage{{builder.StagePulling, builder.StagePreparing}, nil} {
		log := &stageLog{}
		l, err := e.m.Acquire(t.Context(), base, log)
		if err != nil {
			t.Fatalf("Acquire %d: %v\n%s", i, err, log.String())
		}
		l.Release()
		if !slices.Equal(log.stages, want) {
			t.Errorf("Acquire %d: stages %v, want %v", i, log.stages, want)
		}
	}
}

// TestMirrorListUnused: a mirror list that no repository of the base
// image's pacman.conf includes fails the setup, saying why, rather than
// being ignored.
func TestMirrorListUnused(t *testing.T) {
	e := newEnv(t, builder.WithMirrorList("https://mirror.example/$repo/os/$arch"))
	reg := startRegistry(t)
	base := pushed(t, reg, "own-servers", fakeBase(t, map[string]string{"pacman.conf": "[options]\nArchitecture = auto\n\n[core]\nServer = https://elsewhere.example/$repo\n"}))
	var log sandboxtest.Buffer
	l, err := e.m.Acquire(t.Context(), base, &log)
	if err == nil {
		l.Release()
		t.Fatalf("Acquire succeeded:\n%s", log.String())
	}
	const want = "==> ERROR: the Pacman mirrors (pacman_mirrors, --pacman-mirror) would not be used: no repository in the base image's /etc/pacman.conf includes /etc/pacman.d/mirrorlist"
	var se *builder.SetupError
	if !errors.As(err, &se) || !strings.Contains(string(se.Log), want) || strings.Contains(log.String(), "fake pacman:") {
		t.Errorf("error %v; log:\n%s", err, log.String())
	}
}

func TestBadOptions(t *testing.T) {
	for name, opt := range map[string]builder.Option{
		"package with space":   builder.WithPackages("base-devel git"),
		"package option":       builder.WithPackages("--overwrite=*"),
		"package shell":        builder.WithPackages("$(reboot)"),
		"mirror newline":       builder.WithMirrorList("https://a.example/\n[evil]"),
		"mirror relative":      builder.WithMirrorList("mirror.example"),
		"repo name bracket":    builder.WithRepos(pacman.Repo{Name: "a]\n[b", Servers: []string{"https://a.example"}}),
		"repo options":         builder.WithRepos(pacman.Repo{Name: "options", Servers: []string{"https://a.example"}}),
		"repo without server":  builder.WithRepos(pacman.Repo{Name: "a"}),
		"siglevel newline":     builder.WithRepos(pacman.Repo{Name: "a", Servers: []string{"https://a.example"}, SigLevel: "Never\nServer = x"}),
		"max age zero":         builder.WithMaxAge(0),
		"setup timeout zero":   builder.WithSetupTimeout(0),
		"retry after negative": builder.WithRetryAfter(-time.Second),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := builder.Open(t.TempDir(), opt)
			if !errors.Is(err, builder.ErrBadConfig) {
				t.Errorf("Open: %v, want ErrBadConfig", err)
			}
		})
	}
	if _, err := builder.Open(filepath.Join(t.TempDir(), "a,b")); !errors.Is(err, builder.ErrBadConfig) {
		t.Errorf("directory with a comma: %v", err)
	}
	// A Manager prepares: it needs an image store and a sandbox.
	if _, err := builder.New(nil, nil, t.TempDir()); !errors.Is(err, builder.ErrBadConfig) {
		t.Errorf("New without store and sandbox: %v", err)
	}
	if _, err := builder.New(nil, (*sandbox.Manager)(nil), t.TempDir()); !errors.Is(err, builder.ErrBadConfig) {
		t.Errorf("New with a nil *sandbox.Manager: %v", err)
	}
}

func TestSetupFailureCarriesLog(t *testing.T) {
	var preps prepCounter
	e := newEnv(t, builder.WithPrepareObserver(preps.observe))
	reg := startRegistry(t)
	base := pushed(t, reg, "fail", fakeBase(t, map[string]string{"fail": "no-such-package"}))
	var log sandboxtest.Buffer
	l, err := e.m.Acquire(t.Context(), base, &log)
	if err == nil {
		l.Release()
		t.Fatal("Acquire succeeded")
	}
	var se *builder.SetupError
	if !errors.Is(err, builder.ErrSetup) || !errors.As(err, &se) {
		t.Fatalf("error %v (%T), want a *SetupError", err, err)
	}
	if se.ExitCode != 1 || se.Base != base || !strings.Contains(string(se.Log), "error: target not found: no-such-package") {
		t.Errorf("SetupError %+v\nlog tail:\n%s", se, se.Log)
	}
	if !strings.Contains(log.String(), "error: target not found: no-such-package") {
		t.Errorf("caller's log:\n%s", log.String())
	}
	if ids := builderIDs(t, e); len(ids) != 0 {
		t.Errorf("builders left: %v", ids)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "builders", "tmp")); len(ents) != 0 {
		t.Errorf("temporaries left: %v", ents)
	}
	if ok, failed := preps.counts(); ok != 0 || failed != 1 {
		t.Errorf("preparation observer: %d succeeded, %d failed; want 0 and 1", ok, failed)
	}
}

func TestConcurrentAcquirePreparesOnce(t *testing.T) {
	var preps prepCounter
	e := newEnv(t, builder.WithPrepareObserver(preps.observe))
	reg := startRegistry(t)
	g := newGate(t, false)
	slow := pushed(t, reg, "slow", fakeBase(t, map[string]string{"gate": g.url}))
	fast := pushed(t, reg, "fast", fakeBase(t, nil))
	const n = 5
	var wg sync.WaitGroup
	logs := make([]sandboxtest.Buffer, n)
	leases := make([]*builder.Lease, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = e.m.Acquire(t.Context(), slow, &logs[i])
		}()
	}
	// The slow base's setup is running, held at the gate: another base is
	// not held up by it.
	g.waitStarted(t, 1, 2*time.Minute)
	held := time.Now()
	acquireUnblocked(t, e.m, fast, nil).Release()
	g.set(true)
	wg.Wait()
	opened := time.Since(held)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Acquire %d: %v", i, errs[i])
		}
		defer leases[i].Release()
		if leases[i].Digest != leases[0].Digest {
			t.Errorf("lease %d: builder %s, lease 0: %s", i, leases[i].Digest, leases[0].Digest)
		}
		if got := strings.Count(logs[i].String(), "fake pacman: -Syu"); got != 1 {
			t.Errorf("log %d shows %d setups:\n%s", i, got, logs[i].String())
		}
	}
	if got := g.startedCount(); got != 1 {
		t.Errorf("%d setups of the slow base started, want 1 for %d concurrent Acquires", got, n)
	}
	if ids := builderIDs(t, e); len(ids) != 2 {
		t.Errorf("%d builders on disk, want one per base: %v", len(ids), ids)
	}
	// Once more, cached: no preparation.
	lc, err := e.m.Acquire(t.Context(), fast, nil)
	if err != nil {
		t.Fatal(err)
	}
	lc.Release()
	if ok, failed := preps.counts(); ok != 2 || failed != 0 {
		t.Errorf("preparation observer: %d succeeded, %d failed; want one success per base", ok, failed)
	}
	// The slow preparation lasted at least as long as it was held.
	if took := preps.slowest(); took < opened {
		t.Errorf("slowest preparation reported as %s; the slow base's setup was held at the gate for %s", took, opened)
	}
}

// prepCounter records what a builder Manager reports to its preparation
// observer.
type prepCounter struct {
	mu         sync.Mutex
	ok, failed int
	max        time.Duration
}

func (c *prepCounter) observe(took time.Duration, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.failed++
	} else {
		c.ok++
	}
	c.max = max(c.max, took)
}

func (c *prepCounter) counts() (ok, failed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok, c.failed
}

func (c *prepCounter) slowest() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}
