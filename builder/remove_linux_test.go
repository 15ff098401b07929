package builder_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vieter-v/vagent/builder"
)

// TestRemove removes every builder of one base, current included, keeps
// one in use, and collects the layout blobs only removed builders used.
func TestRemove(t *testing.T) {
	e := newEnv(t)
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

	if rep, err := e.m.Remove(t.Context(), "no/such:base"); err != nil || rep != (builder.RemoveReport{}) {
		t.Errorf("Remove of an unknown base: %+v, %v", rep, err)
	}
	rep, err := e.m.Remove(t.Context(), b)
	if err != nil || rep.Builders != 1 || rep.InUse != 0 || rep.Blobs == 0 {
		t.Errorf("Remove(b): %+v, %v", rep, err)
	}
	if ids := builderIDs(t, e); len(ids) != 1 || ids[0] != la.Digest.Hex {
		t.Errorf("builders after Remove(b): %v", ids)
	}
	if hasBlob(e, lb.Digest) {
		t.Error("the removed builder's manifest is still in the layout")
	}
	if rep, err := e.m.Remove(t.Context(), a); err != nil || rep.Builders != 0 || rep.InUse != 1 {
		t.Errorf("Remove(a) while in use: %+v, %v", rep, err)
	}
	la.Release()
	if rep, err := e.m.Remove(t.Context(), a); err != nil || rep.Builders != 1 {
		t.Errorf("Remove(a) after release: %+v, %v", rep, err)
	}
	ents, _ := os.ReadDir(filepath.Join(e.dir, "builders", "oci", "blobs", "sha256"))
	if len(ents) != 0 {
		t.Errorf("%d blobs left in the layout with no builder", len(ents))
	}
	infos, err := e.m.List()
	if err != nil || len(infos) != 0 {
		t.Errorf("List after removing everything: %v, %v", infos, err)
	}
}
