package oci

// The references the store has pulled (refs.json): record, look up, list, remove.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ImageInfo describes an image in the store.
type ImageInfo struct {
	Ref      string
	Digest   v1.Hash
	Size     int64 // compressed bytes of config and layers
	Pulled   time.Time
	Unpacked bool // a rootfs exists
}

type refRecord struct {
	Digest v1.Hash   `json:"digest"`
	Pulled time.Time `json:"pulled"`
}

type refIndex struct {
	Refs map[string]refRecord `json:"refs"`
}

// readIndex reads refs.json (an empty index if there is none).
func (s *Store) readIndex() (*refIndex, error) {
	idx := &refIndex{Refs: map[string]refRecord{}}
	b, err := os.ReadFile(filepath.Join(s.dir, "refs.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return idx, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(s.dir, "refs.json"), err)
	}
	if idx.Refs == nil {
		idx.Refs = map[string]refRecord{}
	}
	return idx, nil
}

// updateIndex changes refs.json under its lock, atomically.
func (s *Store) updateIndex(change func(*refIndex) error) error {
	lf, err := os.OpenFile(filepath.Join(s.dir, "refs.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return diskFull(err)
	}
	defer lf.Close()
	if _, err := flock(lf, true, true); err != nil {
		return err
	}
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	if err := change(idx); err != nil {
		return err
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return s.writeFile(filepath.Join(s.dir, "refs.json"), b)
}

func (s *Store) recordRef(ref string, h v1.Hash) error {
	return s.updateIndex(func(idx *refIndex) error {
		idx.Refs[ref] = refRecord{Digest: h, Pulled: time.Now().UTC()}
		return nil
	})
}

func (s *Store) lookupRef(ref string) (refRecord, bool) {
	idx, err := s.readIndex()
	if err != nil {
		return refRecord{}, false
	}
	rec, ok := idx.Refs[ref]
	return rec, ok
}

// Recorded returns the manifest digest that ref resolved to when the
// store last pulled it, and false when the store has no record of ref. It
// reads the store's records only: no network.
func (s *Store) Recorded(ref string) (v1.Hash, bool) {
	r, err := ParseReference(ref)
	if err != nil {
		return v1.Hash{}, false
	}
	rec, ok := s.lookupRef(r.String())
	return rec.Digest, ok
}

// List returns the images in the store, sorted by reference.
func (s *Store) List() ([]ImageInfo, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []ImageInfo
	for ref, rec := range idx.Refs {
		info := ImageInfo{Ref: ref, Digest: rec.Digest, Pulled: rec.Pulled}
		if img, err := s.loadImage(ref, rec.Digest); err == nil {
			info.Size = img.Size()
		}
		info.Unpacked = s.validRootfs(s.rootfsPath(rec.Digest))
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Remove forgets ref and removes its rootfs and blobs unless another
// reference uses them or the rootfs is in use (see Rootfs.Release).
func (s *Store) Remove(ref string) error {
	r, err := ParseReference(ref)
	if err != nil {
		return err
	}
	key := r.String()
	gc, err := s.lockGC(context.Background(), true)
	if err != nil {
		return err
	}
	defer gc.Close()
	var digest v1.Hash
	err = s.updateIndex(func(idx *refIndex) error {
		rec, ok := idx.Refs[key]
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		digest = rec.Digest
		delete(idx.Refs, key)
		return nil
	})
	if err != nil {
		return err
	}
	_, err = s.collect(map[v1.Hash]bool{digest: true})
	return err
}
