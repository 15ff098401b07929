package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vieter-v/vagent/internal/lockfile"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/sandbox"
)

// Labels of the builder image's config.
const (
	labelBase       = "dev.vieter.vagent.base"
	labelBaseDigest = "dev.vieter.vagent.base.digest"
)

// prepare makes a builder for base unless mode says the current one will
// do. It holds the base's lock file, so that one process at a time
// prepares a base, and reports whether it made a new builder. The
// preparation observer hears of every attempt to make one.
func (m *Manager) prepare(ctx context.Context, out io.Writer, key, base string, mode prepMode) (md *meta, rebuilt bool, err error) {
	log := m.logger(base)
	// One preparation of a base at a time, whatever its recipe (Prune
	// spares the layout entries of a base being prepared).
	lf, err := os.OpenFile(m.lockPath(baseKey(base)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false, err
	}
	defer lf.Close()
	if ok, err := lockfile.Lock(lf, true, false); err != nil {
		return nil, false, err
	} else if !ok {
		setStage(out, StagePreparing)
		fmt.Fprintf(out, "==> vagent: waiting for another process preparing the builder for %s\n", base)
		if err := lockfile.LockContext(ctx, lf, true); err != nil {
			return nil, false, err
		}
	}
	cur, err := m.current(key)
	if err != nil {
		return nil, false, err
	}
	if mode == prepIfNeeded && cur != nil && m.fresh(cur) {
		return cur, false, nil // another process made it meanwhile
	}
	start := m.o.now()
	defer func() {
		if m.o.prepared != nil && (rebuilt || err != nil) {
			m.o.prepared(m.o.now().Sub(start), err)
		}
	}()
	fmt.Fprintf(out, "==> vagent: preparing a builder for %s\n", base)
	setStage(out, StagePulling)
	rf, err := m.store.Rootfs(ctx, base)
	if err != nil {
		return nil, false, fmt.Errorf("preparing a builder: %w", err)
	}
	defer rf.Release()
	fmt.Fprintf(out, "==> vagent: base image %s\n", rf.Digest)
	if mode == prepRefresh && cur != nil && m.fresh(cur) && cur.BaseDigest == rf.Digest {
		fmt.Fprintf(out, "==> vagent: the builder %s is fresh and its base unchanged\n", cur.Digest)
		return cur, false, nil
	}
	setStage(out, StagePreparing)
	md, err = m.build(ctx, out, base, rf)
	if err != nil {
		return nil, false, err
	}
	if err := m.setCurrent(key, md.ID); err != nil {
		return nil, false, fmt.Errorf("publishing the builder: %w", err)
	}
	m.mu.Lock()
	m.metas[md.ID] = md
	m.mu.Unlock()
	elapsed := m.o.now().Sub(start).Round(time.Millisecond)
	fmt.Fprintf(out, "==> vagent: builder %s ready in %s\n", md.Digest, elapsed)
	log.WithFields(map[string]any{"builder": md.ID[:12], "elapsed": elapsed}).Info("builder ready")
	if cur != nil {
		// The previous builder goes now, or with its last lease.
		if _, err := m.removeBuilder(ctx, cur.ID, false); err != nil {
			log.WithError(err).Warn("removing the previous builder")
		}
	}
	return md, true, nil
}

// build runs the setup on the base rootfs and records the result as a
// builder: image in the layout, flattened rootfs, meta.json. Everything is
// made in a locked temporary directory and published by a rename.
func (m *Manager) build(ctx context.Context, out io.Writer, base string, rf *oci.Rootfs) (_ *meta, retErr error) {
	tmp, lock, err := m.newTemp("prep-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			lockfile.RemoveTree(tmp)
		}
		lock.Close()
	}()
	baseImg, err := m.store.Image(rf.Digest)
	if err != nil {
		return nil, fmt.Errorf("reading the base image: %w", err)
	}

	// 1. The setup, on an overlay of the base.
	upper, err := m.runSetup(ctx, out, base, rf.Dir)
	if err != nil {
		return nil, err
	}
	defer upper.Release()

	// 2. What it changed, as a layer.
	mt := types.OCILayer
	if bmt, _ := baseImg.MediaType(); bmt == types.DockerManifestSchema2 {
		mt = types.DockerLayer
	}
	fmt.Fprintf(out, "==> vagent: writing the builder layer\n")
	_, _, idSize := m.sb.IDRange() // the upper is owned by the sandbox's host ids
	layerPath := filepath.Join(tmp, "layer.tar.gz")
	layer, err := writeGzipLayer(layerPath, mt, func(w io.Writer) error {
		return upperTar(ctx, w, upper.Path, rf.Dir, upper.UIDBase, upper.GIDBase, idSize, upper.UserXattr, m.store.Budget())
	})
	if err != nil {
		return nil, fmt.Errorf("writing the builder layer: %w", err)
	}
	if err := upper.Release(); err != nil && !errors.Is(err, sandbox.ErrReleased) {
		return nil, err
	}

	// 3. The image: base layers, the new one, a config with history.
	now := m.o.now().UTC()
	img, err := mutate.Append(baseImg, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: now},
			CreatedBy: m.o.setupCommand(),
			Comment:   "vagent builder",
		},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: now}
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	cfg.Config.Labels[labelBase] = base
	cfg.Config.Labels[labelBaseDigest] = rf.Digest.String()
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, err
	}
	id := digest.Hex
	size, err := imageSize(img)
	if err != nil {
		return nil, err
	}

	// 4. Its flattened rootfs: the base's tree (hardlinked) plus the layer.
	rootfs := filepath.Join(tmp, rootfsName)
	fmt.Fprintf(out, "==> vagent: flattening the builder rootfs\n")
	err = linkTree(ctx, rf.Dir, rootfs)
	switch {
	case err == nil:
		layerOnly, err := mutate.AppendLayers(empty.Image, layer)
		if err != nil {
			return nil, err
		}
		if err := oci.Unpack(ctx, layerOnly, rootfs, oci.WithIDShift(m.store.IDShift())); err != nil {
			return nil, fmt.Errorf("applying the builder layer: %w", err)
		}
	case errors.Is(err, errCrossDevice):
		if err := lockfile.RemoveTree(rootfs); err != nil {
			return nil, err
		}
		if err := oci.Unpack(ctx, img, rootfs, oci.WithIDShift(m.store.IDShift())); err != nil {
			return nil, fmt.Errorf("unpacking the builder: %w", err)
		}
	default:
		return nil, fmt.Errorf("copying the base rootfs: %w", err)
	}

	// 5. The image in the layout.
	if err := m.addImage(ctx, img, base, id); err != nil {
		return nil, fmt.Errorf("recording the builder image: %w", err)
	}
	if err := os.Remove(layerPath); err != nil {
		return nil, err
	}

	// 6. Metadata, then publish.
	layerDigest, err := layer.Digest()
	if err != nil {
		return nil, err
	}
	layerSize, err := layer.Size()
	if err != nil {
		return nil, err
	}
	md := &meta{
		Version: metaVersion, ID: id, Base: base, BaseDigest: rf.Digest, Digest: digest,
		LayerDigest: layerDigest, LayerSize: layerSize, Size: size, Created: now,
		Recipe: m.recipe, Packages: m.o.packages,
	}
	b, err := json.MarshalIndent(md, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := lockfile.WriteFile(filepath.Join(tmp, metaFile), b, lockfile.WriteOptions{Sync: true}); err != nil {
		return nil, err
	}
	if err := lockfile.SyncFS(tmp); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return nil, fmt.Errorf("syncing the builder: %w", err)
	}
	if err := os.Rename(tmp, m.builderDir(id)); err != nil {
		return nil, fmt.Errorf("publishing the builder: %w", err)
	}
	return md, nil
}

// runSetup runs the setup script as root in a sandbox on an overlay of
// lower and returns the overlay's upper directory.
func (m *Manager) runSetup(ctx context.Context, out io.Writer, base, lower string) (*sandbox.Upper, error) {
	sctx, cancel := context.WithTimeout(ctx, m.o.setupTimeout)
	defer cancel()
	tail, ok := out.(*fanout)
	res, err := m.sb.Run(sctx, sandbox.Spec{
		Lower:     lower,
		Args:      m.o.setupArgs(),
		Env:       m.o.setupEnv(),
		Hostname:  "vagent-builder",
		Network:   m.o.network,
		Forward:   m.o.setupForwards(),
		Limits:    m.o.setupLimits,
		KeepUpper: true,
		Output:    out,
	})
	if err != nil {
		return nil, fmt.Errorf("running the builder setup: %w", err)
	}
	if res.ExitCode == 0 && !res.TimedOut && !res.Cancelled {
		if res.Upper == nil {
			return nil, errors.New("running the builder setup: no upper directory")
		}
		return res.Upper, nil
	}
	if res.Upper != nil {
		res.Upper.Release()
	}
	if res.Cancelled {
		return nil, fmt.Errorf("builder setup for %s: %w", base, ctx.Err())
	}
	se := &SetupError{Base: base, ExitCode: res.ExitCode, TimedOut: res.TimedOut}
	if ok {
		se.Log = tail.tailBytes()
	}
	return nil, se
}

// imageSize is the compressed size of an image: config and layers.
func imageSize(img v1.Image) (int64, error) {
	man, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	n := man.Config.Size
	for _, l := range man.Layers {
		n += l.Size
	}
	return n, nil
}
