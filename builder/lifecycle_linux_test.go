package builder_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/internal/testkit"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/sandbox"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

func hasBlob(e *env, h v1.Hash) bool {
	_, err := os.Stat(filepath.Join(e.dir, "builders", "oci", "blobs", h.Algorithm, h.Hex))
	return err == nil
}

// TestExpiryRebuildsAndCollectsAfterLastBuild: a stale builder keeps
// serving while its replacement is prepared in the background, and goes
// only when the last build using it has released it.
func TestExpiryRebuildsAndCollectsAfterLastBuild(t *testing.T) {
	clk := &clock{now: time.Now()}
	e := newEnv(t, builder.WithMaxAge(time.Hour), builder.WithClock(clk.Now))
	reg := startRegistry(t)
	g := newGate(t, true)
	base := pushed(t, reg, "slow", fakeBase(t, map[string]string{"gate": g.url}))
	ctx := t.Context()

	l1, err := e.m.Acquire(ctx, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := l1.Digest
	clk.Add(2 * time.Hour)

	// The rebuild is held at the gate until the stale Acquire returned:
	// had Acquire waited for it, it would never return.
	g.set(false)
	var log sandboxtest.Buffer
	l2 := acquireUnblocked(t, e.m, base, &log)
	g.waitStarted(t, 2, 2*time.Minute) // the background rebuild is under way
	g.set(true)
	if l2.Digest != old {
		t.Errorf("stale Acquire got %s, want the old builder %s", l2.Digest, old)
	}
	if strings.Contains(log.String(), "fake pacman") {
		t.Errorf("background setup output went to a build's log:\n%s", log.String())
	}
	waitFor(t, "the new builder", 30*time.Second, func() bool {
		infos, err := e.m.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range infos {
			if in.Current && in.Digest != old {
				return true
			}
		}
		return false
	})
	l3, err := e.m.Acquire(ctx, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Release()
	if l3.Digest == old || !l3.Created.After(l1.Created) {
		t.Fatalf("after the refresh: builder %s created %s (old %s, %s)", l3.Digest, l3.Created, old, l1.Created)
	}
	if ids := builderIDs(t, e); len(ids) != 2 {
		t.Fatalf("builders on disk: %v, want the old one (in use) and the new one", ids)
	}
	if _, err := os.Stat(filepath.Join(l1.Rootfs, "build")); err != nil {
		t.Errorf("old rootfs while in use: %v", err)
	}
	l1.Release()
	if ids := builderIDs(t, e); len(ids) != 2 {
		t.Fatalf("old builder removed while a build still uses it: %v", ids)
	}
	l2.Release()
	if ids := builderIDs(t, e); len(ids) != 1 || ids[0] != l3.Digest.Hex {
		t.Fatalf("after the last lease: builders %v, want only %s", ids, l3.Digest.Hex)
	}
	if hasBlob(e, old) {
		t.Errorf("the old builder's manifest is still in the layout")
	}
	if !hasBlob(e, l3.Digest) {
		t.Errorf("the new builder's manifest is not in the layout")
	}
}

// TestRestartReusesFreshBuilderOffline: after a restart, a fresh builder
// is found on disk and leased with the registry stopped, by a Manager whose
// sandbox fails the test if anything is prepared.
func TestRestartReusesFreshBuilderOffline(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := pushed(t, reg, "fake", fakeBase(t, nil))
	l, err := e.m.Acquire(t.Context(), base, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := *l
	l.Release()
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Acquire(t.Context(), base, nil); err != builder.ErrClosed {
		t.Errorf("Acquire after Close: %v", err)
	}
	reg.Close()

	m, err := builder.New(e.store, noSetup{t, e.sb}, filepath.Join(e.dir, "builders"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	start := time.Now()
	l2, err := m.Acquire(t.Context(), base, nil)
	if err != nil {
		t.Fatalf("Acquire after restart, offline: %v", err)
	}
	elapsed := time.Since(start)
	defer l2.Release()
	if l2.Digest != want.Digest || l2.BaseDigest != want.BaseDigest || !l2.Created.Equal(want.Created) || l2.Rootfs != want.Rootfs {
		t.Errorf("after restart %+v, before %+v", l2, want)
	}
	t.Logf("offline Acquire of a cached builder: %s", elapsed)
}

// TestRefreshResolvesBaseWithoutPulling: Refresh asks the registry for the
// base's manifest; with the digest unchanged and the builder fresh it does
// nothing, and when the builder is stale it rebuilds without downloading
// a single base blob again.
func TestRefreshResolvesBaseWithoutPulling(t *testing.T) {
	testkit.RequireRoot(t)
	clk := &clock{now: time.Now()}
	dir := t.TempDir()
	var mu sandboxtest.Buffer
	progress := func(p oci.Progress) {
		if p.Phase == oci.PhaseDownload || p.Phase == oci.PhaseVerified {
			mu.Write([]byte(string(p.Phase) + " " + p.Blob.String() + "\n"))
		}
	}
	e := newEnv(t, builder.WithMaxAge(time.Hour), builder.WithClock(clk.Now))
	store, err := oci.NewStore(filepath.Join(e.dir, "images"), oci.WithProgress(progress), oci.WithSync(false))
	if err != nil {
		t.Fatal(err)
	}
	_ = dir
	m, err := builder.New(store, e.sb, filepath.Join(e.dir, "builders"), builder.WithMaxAge(time.Hour), builder.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	reg := startRegistry(t)
	base := pushed(t, reg, "fake", fakeBase(t, nil))
	first, rebuilt, err := m.Refresh(t.Context(), base, nil)
	if err != nil || !rebuilt {
		t.Fatalf("first Refresh: rebuilt %v, %v", rebuilt, err)
	}
	if !strings.Contains(mu.String(), "download") {
		t.Fatalf("the first preparation downloaded nothing? progress:\n%s", mu.String())
	}
	mu.Reset()

	var log sandboxtest.Buffer
	again, rebuilt, err := m.Refresh(t.Context(), base, &log)
	if err != nil || rebuilt || again.Digest != first.Digest {
		t.Fatalf("Refresh of a fresh builder: rebuilt %v, %s (was %s), %v", rebuilt, again.Digest, first.Digest, err)
	}
	if !strings.Contains(log.String(), "fresh and its base unchanged") {
		t.Errorf("log:\n%s", log.String())
	}
	clk.Add(2 * time.Hour)
	newer, rebuilt, err := m.Refresh(t.Context(), base, nil)
	if err != nil || !rebuilt || newer.Digest == first.Digest || newer.BaseDigest != first.BaseDigest {
		t.Fatalf("Refresh of a stale builder: rebuilt %v, %+v, %v", rebuilt, newer, err)
	}
	if s := mu.String(); s != "" {
		t.Errorf("base blobs downloaded again although its digest did not change:\n%s", s)
	}
	// Build always prepares.
	forced, err := m.Prepare(t.Context(), base, nil)
	if err != nil || forced.Digest == newer.Digest {
		t.Fatalf("Build: %+v, %v", forced, err)
	}
}

func TestPrune(t *testing.T) {
	clk := &clock{now: time.Now()}
	e := newEnv(t, builder.WithMaxAge(time.Hour), builder.WithClock(clk.Now))
	reg := startRegistry(t)
	a := pushed(t, reg, "a", fakeBase(t, nil))
	b := pushed(t, reg, "b", fakeBase(t, map[string]string{"other": "x"}))
	la, err := e.m.Acquire(t.Context(), a, nil)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := e.m.Acquire(t.Context(), b, nil)
	if err != nil {
		t.Fatal(err)
	}
	lb.Release()
	// Leftover of a crash: an unlocked temporary.
	if err := os.MkdirAll(filepath.Join(e.dir, "builders", "tmp", "prep-crashed", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	rep, err := e.m.Prune(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Builders != 0 || rep.InUse != 0 || rep.Temps != 1 {
		t.Errorf("Prune with fresh builders: %+v", rep)
	}
	clk.Add(2 * time.Hour) // both stale now; a is in use
	rep, err = e.m.Prune(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Builders != 1 || rep.InUse != 1 || rep.Blobs == 0 {
		t.Errorf("Prune with stale builders, one in use: %+v", rep)
	}
	if ids := builderIDs(t, e); len(ids) != 1 || ids[0] != la.Digest.Hex {
		t.Errorf("builders after prune: %v", ids)
	}
	if hasBlob(e, lb.Digest) {
		t.Errorf("pruned builder's manifest still in the layout")
	}
	la.Release()
	rep, err = e.m.Prune(t.Context())
	if err != nil || rep.Builders != 1 {
		t.Errorf("Prune after release: %+v, %v", rep, err)
	}
	ents, _ := os.ReadDir(filepath.Join(e.dir, "builders", "oci", "blobs", "sha256"))
	if len(ents) != 0 {
		t.Errorf("%d blobs left in the layout with no builder", len(ents))
	}
}

// crashChildEnv names the environment variable that makes the test binary
// a child that starts preparing a builder and is killed in the middle.
const crashChildEnv = "VAGENT_BUILDER_CRASH_CHILD"

// crashChild runs in the child: dir and base from the environment.
func crashChild() {
	dir, base, _ := strings.Cut(os.Getenv(crashChildEnv), "\n")
	store, err := oci.NewStore(filepath.Join(dir, "images"), oci.WithSync(false))
	if err != nil {
		panic(err)
	}
	sb, err := sandbox.New(filepath.Join(dir, "sandbox"), sandbox.WithSeccomp(sandbox.SeccompSupported), sandbox.WithCgroupParent("vagent-buildertest-crash"))
	if err != nil {
		panic(err)
	}
	m, err := builder.New(store, sb, filepath.Join(dir, "builders"))
	if err != nil {
		panic(err)
	}
	_, err = m.Acquire(context.Background(), base, os.Stdout)
	panic(err) // never reached: the parent kills us during the setup
}

// TestCrashDuringSetupIsCleanedUp kills a process in the middle of a
// builder's setup; the next Manager on the directory discards the
// half-prepared builder, and the base can be prepared again.
func TestCrashDuringSetupIsCleanedUp(t *testing.T) {
	testkit.RequireRoot(t)
	e := newEnv(t)
	e.m.Close()
	if err := e.sb.Close(); err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t)
	base := pushed(t, reg, "slow", fakeBase(t, map[string]string{"slow": "60"}))
	var out sandboxtest.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+e.dir+"\n"+base)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the child's setup to start", 60*time.Second, func() bool {
		return strings.Contains(out.String(), "fake pacman: -Syu")
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "builders", "tmp")); len(ents) == 0 {
		t.Fatal("the killed child left no temporary: nothing tested")
	}
	sb, err := sandbox.New(filepath.Join(e.dir, "sandbox"), sandbox.WithSeccomp(sandbox.SeccompSupported), sandbox.WithCgroupParent("vagent-buildertest-crash"))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	m, err := builder.New(e.store, sb, filepath.Join(e.dir, "builders"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "builders", "tmp")); len(ents) != 0 {
		t.Errorf("half-prepared builder left after New: %v", ents)
	}
	if infos, err := m.List(); err != nil || len(infos) != 0 {
		t.Errorf("List: %+v, %v", infos, err)
	}
	fast := pushed(t, reg, "slow", fakeBase(t, nil)) // same reference, now quick
	l, err := m.Acquire(t.Context(), fast, nil)
	if err != nil {
		t.Fatalf("Acquire after the crash: %v", err)
	}
	l.Release()
}

// noSetup is a builder.Sandbox that fails the test when a setup runs.
type noSetup struct {
	t  *testing.T
	sb builder.Sandbox
}

func (n noSetup) Run(ctx context.Context, spec sandbox.Spec) (*sandbox.Result, error) {
	n.t.Errorf("a builder setup ran: %q", spec.Args)
	return nil, errors.New("no setup expected")
}

func (n noSetup) IDRange() (uid, gid, size uint32) { return n.sb.IDRange() }
