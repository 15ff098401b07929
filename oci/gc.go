package oci

// Garbage collection: blobs and rootfs trees no reference needs.

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// PruneReport says what Prune removed.
type PruneReport struct {
	Blobs  int   // blobs removed
	Rootfs int   // rootfs trees removed
	Temps  int   // stale temporaries removed
	InUse  int   // unreferenced rootfs trees kept because they are in use
	Bytes  int64 // bytes of blobs removed
}

// Prune removes the blobs and rootfs trees no reference uses (except
// trees in use) and stale temporaries.
func (s *Store) Prune(ctx context.Context) (PruneReport, error) {
	gc, err := s.lockGC(ctx, true)
	if err != nil {
		return PruneReport{}, err
	}
	defer gc.Close()
	rep, err := s.collect(nil)
	if err != nil {
		return rep, err
	}
	n, err := s.removeStaleTemps()
	rep.Temps = n
	return rep, err
}

// collect removes what no reference uses. With only set, it considers just
// the blobs and rootfs of those manifests. The caller holds the gc lock
// exclusively.
func (s *Store) collect(only map[v1.Hash]bool) (PruneReport, error) {
	var rep PruneReport
	idx, err := s.readIndex()
	if err != nil {
		return rep, err
	}
	used := map[v1.Hash]bool{}
	usedRootfs := map[string]bool{}
	addImage := func(set map[v1.Hash]bool, h v1.Hash) {
		set[h] = true
		raw, err := os.ReadFile(filepath.Join(s.dir, "blobs", "sha256", h.Hex))
		if err != nil {
			return
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return
		}
		set[m.Config.Digest] = true
		for _, l := range m.Layers {
			set[l.Digest] = true
		}
	}
	for _, rec := range idx.Refs {
		addImage(used, rec.Digest)
		usedRootfs[rec.Digest.Hex] = true
	}
	var candidates map[v1.Hash]bool
	if only != nil {
		candidates = map[v1.Hash]bool{}
		for h := range only {
			addImage(candidates, h)
		}
	}
	// Rootfs trees.
	ents, err := os.ReadDir(filepath.Join(s.dir, "rootfs"))
	if err != nil {
		return rep, err
	}
	for _, e := range ents {
		if tree, ok := strings.CutSuffix(e.Name(), markSuffix); ok {
			if _, err := os.Stat(filepath.Join(s.dir, "rootfs", tree)); errors.Is(err, fs.ErrNotExist) {
				os.Remove(filepath.Join(s.dir, "rootfs", e.Name()))
			}
			continue
		}
		hex, _, _ := strings.Cut(e.Name(), "-") // a shifted tree: <hex>-<uid>-<gid>
		h := v1.Hash{Algorithm: "sha256", Hex: hex}
		if usedRootfs[hex] || (only != nil && !only[h]) {
			continue
		}
		removed, err := s.removeRootfs(e.Name())
		if err != nil {
			return rep, err
		}
		if removed {
			rep.Rootfs++
		} else {
			rep.InUse++
		}
	}
	// Blobs.
	bdir := filepath.Join(s.dir, "blobs", "sha256")
	ents, err = os.ReadDir(bdir)
	if err != nil {
		return rep, err
	}
	for _, e := range ents {
		h := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if used[h] || (candidates != nil && !candidates[h]) {
			continue
		}
		var size int64
		if fi, err := e.Info(); err == nil {
			size = fi.Size()
		}
		if err := os.Remove(filepath.Join(bdir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, err
		}
		rep.Blobs++
		rep.Bytes += size
	}
	return rep, nil
}

// removeRootfs removes rootfs/<hex> unless it is in use. It is first moved
// to tmp/, so that a crash in the middle leaves a stale temporary, never a
// half tree under rootfs/.
func (s *Store) removeRootfs(hex string) (bool, error) {
	p := filepath.Join(s.dir, "rootfs", hex)
	f, err := os.Open(p)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	ok, err := flock(f, true, false)
	if err != nil || !ok {
		return false, err
	}
	tmp, lock, err := s.newTemp("rm-")
	if err != nil {
		return false, err
	}
	defer lock.Close()
	if err := os.Rename(p, filepath.Join(tmp, "rootfs")); err != nil {
		lockfile.RemoveTree(tmp)
		return false, err
	}
	os.Remove(p + markSuffix)
	return true, lockfile.RemoveTree(tmp)
}
