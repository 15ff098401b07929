package builder_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vieter-v/vagent/builder"
	"github.com/vieter-v/vagent/sandbox/sandboxtest"
)

// TestRecipeChangeWaitsForItsBuilder: a builder package added between two
// builds (a changed builder_packages, as after an agent restart or in a
// `vagent build` with other settings on the same data dir) is in the very
// first build after the change: Acquire waits for a builder of the new
// settings and says why, never leasing the old one. The old settings keep
// their builder (a process with them gets it without a preparation), and a
// base pulled anew makes the next Acquire wait for a builder on it.
func TestRecipeChangeWaitsForItsBuilder(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := pushed(t, reg, "recipe", fakeBase(t, nil))
	ctx := t.Context()

	l1, err := e.m.Acquire(ctx, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	l1.Release()
	if _, err := os.Stat(filepath.Join(l1.Rootfs, "usr/share/fake-pacman/extra-tool")); err == nil {
		t.Fatal("the first builder has extra-tool already")
	}

	m2 := e.open(t, builder.WithPackages("base-devel", "git", "extra-tool"))
	var log sandboxtest.Buffer
	l2, err := m2.Acquire(ctx, base, &log)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release()
	if l2.Digest == l1.Digest {
		t.Fatal("the build with extra-tool got the builder made without it")
	}
	if _, err := os.Stat(filepath.Join(l2.Rootfs, "usr/share/fake-pacman/extra-tool")); err != nil {
		t.Errorf("the first build after the change lacks the added package: %v", err)
	}
	if !strings.Contains(log.String(), "made with other builder settings") || !strings.Contains(log.String(), "the build waits for it") {
		t.Errorf("the build's log does not say why it waits:\n%s", log.String())
	}

	// The old settings' builder is still theirs: no preparation.
	var again sandboxtest.Buffer
	l3, err := e.open(t).Acquire(ctx, base, &again)
	if err != nil {
		t.Fatal(err)
	}
	l3.Release()
	if l3.Digest != l1.Digest || strings.Contains(again.String(), "preparing") {
		t.Errorf("the old settings got %s (want %s) after:\n%s", l3.Digest, l1.Digest, again.String())
	}
	infos, err := m2.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.Current != true || in.OtherSettings != (in.Digest == l1.Digest) {
			t.Errorf("builder %s: current %v, other settings %v", in.Digest, in.Current, in.OtherSettings)
		}
	}

	// A new digest of the base, pulled by someone else (vagent image
	// pull): the next build waits for a builder on it.
	base2 := pushed(t, reg, "recipe", fakeBase(t, map[string]string{"v7": ""}))
	if base2 != base {
		t.Fatal(base2)
	}
	if _, err := e.store.Pull(ctx, base); err != nil {
		t.Fatal(err)
	}
	var pulled sandboxtest.Buffer
	l4, err := m2.Acquire(ctx, base, &pulled)
	if err != nil {
		t.Fatal(err)
	}
	defer l4.Release()
	if l4.BaseDigest == l2.BaseDigest || l4.Digest == l2.Digest {
		t.Errorf("after a new base was pulled: builder %s on %s, the old one was %s on %s", l4.Digest, l4.BaseDigest, l2.Digest, l2.BaseDigest)
	}
	if !strings.Contains(pulled.String(), "the image store now has") {
		t.Errorf("the build's log does not say why it waits:\n%s", pulled.String())
	}
}

// TestOlderCurrentLinksMigrated: an older vagent named a base's current
// builder by the base alone; its builders stay current after an upgrade
// (no preparation), under their recipe's name.
func TestOlderCurrentLinksMigrated(t *testing.T) {
	e := newEnv(t)
	reg := startRegistry(t)
	base := pushed(t, reg, "older", fakeBase(t, nil))
	l1, err := e.m.Acquire(t.Context(), base, nil)
	if err != nil {
		t.Fatal(err)
	}
	l1.Release()
	cur := filepath.Join(e.dir, "builders", "current")
	links, err := os.ReadDir(cur)
	if err != nil || len(links) != 1 {
		t.Fatalf("current links %v %v", links, err)
	}
	sum := sha256.Sum256([]byte(base))
	older := filepath.Join(cur, hex.EncodeToString(sum[:16]))
	if err := os.Rename(filepath.Join(cur, links[0].Name()), older); err != nil {
		t.Fatal(err)
	}
	var log sandboxtest.Buffer
	l2, err := e.open(t).Acquire(t.Context(), base, &log)
	if err != nil {
		t.Fatal(err)
	}
	l2.Release()
	if l2.Digest != l1.Digest || strings.Contains(log.String(), "preparing") {
		t.Errorf("after the upgrade: builder %s (want %s), log:\n%s", l2.Digest, l1.Digest, log.String())
	}
	if _, err := os.Lstat(older); !os.IsNotExist(err) {
		t.Errorf("the older link is still there: %v", err)
	}
}
