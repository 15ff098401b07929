package oci

// Flattening a stored image into rootfs/<hex>, once per manifest digest.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vieter-v/vagent/internal/lockfile"
)

func (s *Store) unpackRootfs(ctx context.Context, res *resolved) (retErr error) {
	img := res.img
	final := s.rootfsPath(img.Digest)
	log := s.o.log.WithField("image", img.Ref)
	if s.validRootfs(final) {
		return nil
	}
	if _, err := os.Stat(final); err == nil {
		log.Warn("discarding a rootfs that was not flushed to disk before a reboot")
		if _, err := s.removeRootfs(filepath.Base(final)); err != nil {
			return err
		}
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := s.startFetch(ctx, res)
	defer func() {
		cancel()
		<-f.done
	}()
	tmp, lock, err := s.newTemp("rootfs-")
	if err != nil {
		return err
	}
	defer func() {
		lockfile.RemoveTree(tmp)
		lock.Close()
	}()
	dir := filepath.Join(tmp, "rootfs")
	o := defaultUnpackOptions()
	o.log = s.o.log
	o.ref = img.Ref
	o.progress = s.o.progress
	for _, opt := range s.o.unpack {
		if err := opt(o); err != nil {
			return err
		}
	}
	layers := img.Manifest.Layers
	// A blob this fetch downloaded was checked as it was written; a
	// cached one is checked again while it is unpacked.
	open := func(ctx context.Context, i int) (io.ReadCloser, bool, error) {
		select {
		case <-f.ready[i]:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		if f.errs[i] != nil {
			return nil, false, f.errs[i]
		}
		p, err := s.blobPath(layers[i].Digest)
		if err != nil {
			return nil, false, err
		}
		rc, err := os.Open(p)
		return rc, f.fetched[i], err
	}
	if err := unpackLayers(ctx, dir, layers, open, o); err != nil {
		if errors.Is(err, ErrDigestMismatch) {
			// A cached blob went bad on disk: drop it.
			for _, l := range layers {
				if p, perr := s.blobPath(l.Digest); perr == nil && strings.Contains(err.Error(), shortDigest(l.Digest)) {
					os.Remove(p)
				}
			}
		}
		return err
	}
	mark := s.boot
	if s.o.sync || mark == "" {
		if err := lockfile.SyncFS(dir); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			return fmt.Errorf("syncing rootfs: %w", err)
		}
		mark = syncedMark
	}
	// The mark goes first: a tree is never published without one.
	if err := s.writeFile(final+markSuffix, []byte(mark+"\n")); err != nil {
		return err
	}
	if err := os.Rename(dir, final); err != nil {
		if _, serr := os.Stat(final); serr == nil {
			// Another process published it first; its tree may not
			// be flushed even if ours was.
			if mark == syncedMark && s.boot != "" {
				s.writeFile(final+markSuffix, []byte(s.boot+"\n"))
			}
			return nil
		}
		return diskFull(fmt.Errorf("publishing rootfs: %w", err))
	}
	log.WithField("elapsed", time.Since(start).Round(time.Millisecond)).Info("rootfs ready")
	s.progress(Progress{Ref: img.Ref, Phase: PhaseDone, Blob: img.Digest, Index: -1, Count: len(layers)})
	return nil
}

const (
	markSuffix = ".boot"
	syncedMark = "synced"
)

// validRootfs reports whether the tree at final may be used: it was
// published whole (its mark is written before the rename) and either
// flushed to disk or published during this boot. A tree published without
// a flush before a power loss may have lost data: it is unpacked again.
func (s *Store) validRootfs(final string) bool {
	if _, err := os.Stat(final); err != nil {
		return false
	}
	b, err := os.ReadFile(final + markSuffix)
	if err != nil {
		return false
	}
	m := strings.TrimSpace(string(b))
	return m == syncedMark || (m != "" && m == s.boot)
}
