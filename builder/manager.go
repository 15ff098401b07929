package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/lockfile"
	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/sandbox"
)

// Manager prepares and hands out builders under one directory
// (<data_dir>/builders). It is safe for concurrent use, and several
// processes (the agent and `vagent image` commands) may use the same
// directory at once.
type Manager struct {
	store  *oci.Store
	sb     *sandbox.Manager
	layout *oci.Layout // the builders' images, DIR/oci
	dir    string
	o      *options
	recipe string

	mu      sync.Mutex
	closed  bool
	flights map[string]*flight   // by base: the preparation under way
	failed  map[string]time.Time // by base: last failed background refresh
	metas   map[string]*meta     // by builder id (meta.json never changes)
	leases  map[string]int       // by builder id: leases held in this process
	wg      sync.WaitGroup
}

// prepMode says when a preparation really builds.
type prepMode int

const (
	prepIfNeeded prepMode = iota // unless the current builder is fresh
	prepRefresh                  // unless it is fresh and its base digest unchanged
	prepForce                    // always
)

// flight is one preparation that callers wait for.
type flight struct {
	mode    prepMode
	out     *fanout
	cancel  context.CancelFunc
	done    chan struct{}
	md      *meta
	rebuilt bool
	err     error
	// waiters counts the callers waiting for it (m.mu); background is set
	// for a refresh no caller started. A preparation that callers started
	// is cancelled when the last of them gives up (its context ended).
	waiters    int
	background bool
}

// Lease is a builder in use by a build. Rootfs stays valid, and the
// builder on disk, until Release.
type Lease struct {
	// Rootfs is the builder's flattened tree: the read-only lower of a
	// build (sandbox.Spec.Lower). It must not be written to.
	Rootfs string
	// Base is the canonical base image reference.
	Base string
	// BaseDigest is the manifest digest of the base image the builder was
	// made from; Digest is the builder image's manifest digest.
	BaseDigest, Digest v1.Hash
	// Created is when the builder was prepared.
	Created time.Time

	release func()
}

// Release ends the lease. It is idempotent. When the builder is no longer
// the current one of its base and this was its last lease, the builder is
// removed.
func (l *Lease) Release() {
	if l != nil && l.release != nil {
		l.release()
	}
}

// Info describes a builder on disk.
type Info struct {
	ID         string // the builder image's manifest digest, hex
	Base       string
	BaseDigest v1.Hash
	Digest     v1.Hash
	Created    time.Time
	Size       int64 // compressed bytes of the image (config and layers)
	LayerSize  int64 // compressed bytes of the builder's own layer
	Current    bool  // the builder that new builds of Base with its settings get
	Stale      bool  // older than the maximum age
	// OtherSettings: made with other builder settings (packages,
	// repositories, mirror list, setup) than this Manager's; builds with
	// this Manager's settings do not use it.
	OtherSettings bool
	InUse         bool // leased, by this or another process
}

// PruneReport says what Prune removed: the builders (InUse counts those
// that would have been removed but are in use), their blobs, and stale
// temporaries.
type PruneReport struct {
	RemoveReport
	Temps int // stale temporaries removed
}

// errGone means a builder was removed between finding and leasing it.
var errGone = errors.New("builder removed")

// New opens (creating it if needed) the builder directory dir, typically
// <data_dir>/builders, and removes what a crashed process left behind:
// half-prepared builders and, when store and sb are given (an agent
// starting), superseded builders no one uses any more. store and sb are
// needed to prepare builders; with nil ones the Manager can still list,
// lease existing builders and prune.
func New(store *oci.Store, sb *sandbox.Manager, dir string, opts ...Option) (*Manager, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(abs, ",:\\") {
		return nil, fmt.Errorf("%w: builder directory %q: ',', ':' and '\\' cannot be used in an overlay lower", ErrBadConfig, abs)
	}
	for _, d := range []string{buildersDir, currentDirName, locksDirName, tmpDirName} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("creating the builder directory: %w", err)
		}
	}
	m := &Manager{
		store: store, sb: sb, dir: abs, o: o, recipe: o.recipe(),
		flights: map[string]*flight{},
		failed:  map[string]time.Time{},
		metas:   map[string]*meta{},
		leases:  map[string]int{},
	}
	if m.layout, err = oci.OpenLayout(filepath.Join(abs, layoutDirName), store); err != nil {
		return nil, fmt.Errorf("creating the builders' image layout: %w", err)
	}
	if n, err := m.removeStaleTemps(); err != nil {
		return nil, err
	} else if n > 0 {
		o.log.WithField("count", n).Info("removed half-prepared builders of an interrupted run")
	}
	m.migrateLinks()
	if store != nil && sb != nil {
		// An agent starting: collect what a killed one left.
		if rep, err := m.collectSuperseded(context.Background(), false); err != nil {
			o.log.WithError(err).Warn("collecting superseded builders")
		} else if rep.Builders > 0 {
			o.log.WithField("count", rep.Builders).Info("removed superseded builders")
		}
	}
	return m, nil
}

// Dir returns the Manager's directory.
func (m *Manager) Dir() string { return m.dir }

// LayoutDir returns the OCI image layout that holds the builder images,
// each tagged (annotation org.opencontainers.image.ref.name) with its base
// reference: `skopeo copy oci:LAYOUT:BASE ...`.
func (m *Manager) LayoutDir() string { return m.layout.Dir() }

// Acquire returns a lease on a ready builder for baseImage made the way
// this Manager makes them: its recipe (packages, repositories, mirror
// list, setup script) and the base digest the image store has for
// baseImage. When there is such a builder and it is fresh, that is all
// (no network access). When it is older than the maximum age, Acquire
// leases it at once and prepares the replacement in the background. When
// there is none — none at all, or only builders made with other settings
// or from another digest of the base — Acquire prepares one and waits,
// saying why in log (one preparation per base, shared by concurrent
// callers; its output streams to log, which may be nil): a build never
// runs on a builder its settings did not ask for. A failed setup is a
// *SetupError. Release the lease when the build is over.
func (m *Manager) Acquire(ctx context.Context, baseImage string, log io.Writer) (*Lease, error) {
	ref, err := oci.ParseReference(baseImage)
	if err != nil {
		return nil, err
	}
	base := ref.String()
	key := currentKey(base, m.recipe)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// A builder was removed under our feet (pruned, or
			// replaced): look again after a short pause.
			if attempt > 50 {
				return nil, fmt.Errorf("builder for %s: %w while acquiring it", base, errGone)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
		if m.isClosed() {
			return nil, ErrClosed
		}
		md, err := m.current(key)
		if err != nil {
			return nil, err
		}
		if md != nil && !m.baseChanged(md) {
			// The builder of this recipe and base digest. Only age may
			// let a build use it while its successor is prepared.
			if m.expired(md) {
				m.refreshInBackground(ctx, key, base)
			}
			l, err := m.lease(md)
			if errors.Is(err, errGone) {
				continue
			}
			return l, err
		}
		if attempt == 0 {
			m.sayWhyPreparing(log, base, md)
		}
		md, _, err = m.run(ctx, key, base, prepIfNeeded, log)
		if err != nil {
			return nil, err
		}
		l, err := m.lease(md)
		if errors.Is(err, errGone) {
			continue
		}
		return l, err
	}
}

// Refresh makes sure the builder of baseImage is fresh and made from the
// base's current digest: it resolves the base again (a registry request
// for the manifest; blobs already in the store are not downloaded) and
// prepares a new builder when there is none, it is stale, or the base
// changed. It reports whether it prepared one. Setup output goes to log.
func (m *Manager) Refresh(ctx context.Context, baseImage string, log io.Writer) (Info, bool, error) {
	return m.prepareNow(ctx, baseImage, prepRefresh, log)
}

// Prepare prepares a new builder for baseImage even if the current one is
// fresh. Setup output goes to log.
func (m *Manager) Prepare(ctx context.Context, baseImage string, log io.Writer) (Info, error) {
	info, _, err := m.prepareNow(ctx, baseImage, prepForce, log)
	return info, err
}

func (m *Manager) prepareNow(ctx context.Context, baseImage string, mode prepMode, log io.Writer) (Info, bool, error) {
	ref, err := oci.ParseReference(baseImage)
	if err != nil {
		return Info{}, false, err
	}
	base := ref.String()
	md, rebuilt, err := m.run(ctx, currentKey(base, m.recipe), base, mode, log)
	if err != nil {
		return Info{}, false, err
	}
	return m.info(md), rebuilt, nil
}

func (m *Manager) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// run starts a preparation of the base, or joins the one under way (a
// forced or refreshing one waits for another mode's preparation to end
// first), and waits for its result.
func (m *Manager) run(ctx context.Context, key, base string, mode prepMode, log io.Writer) (*meta, bool, error) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, false, ErrClosed
		}
		f := m.flights[key]
		if f != nil && f.mode != mode && mode != prepIfNeeded {
			m.mu.Unlock()
			select {
			case <-f.done:
				continue
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		if f == nil {
			f = m.startLocked(ctx, key, base, mode)
		}
		f.waiters++
		detach := f.out.attach(log)
		m.mu.Unlock()
		select {
		case <-f.done:
			detach()
			m.leave(f, false)
			return f.md, f.rebuilt, f.err
		case <-ctx.Done():
			detach()
			m.leave(f, true)
			return nil, false, ctx.Err()
		}
	}
}

// leave ends a caller's wait for f. When the last caller of a preparation
// they started gives up, the preparation stops: a job that timed out or an
// agent shutting down does not leave a setup or a layer write running.
func (m *Manager) leave(f *flight, gaveUp bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f.waiters--
	if gaveUp && f.waiters == 0 && !f.background {
		f.cancel()
	}
}

// startLocked starts a preparation; m.mu is held. The preparation is not
// bound to the context of the caller that started it (other callers may
// wait for it, and its result outlives them): it ends with Close, or when
// every caller waiting for it gave up (leave).
func (m *Manager) startLocked(ctx context.Context, key, base string, mode prepMode) *flight {
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &flight{mode: mode, out: newFanout(), cancel: cancel, done: make(chan struct{})}
	m.flights[key] = f
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer cancel()
		md, rebuilt, err := m.prepare(pctx, f.out, key, base, mode)
		m.mu.Lock()
		delete(m.flights, key)
		switch {
		case err != nil && pctx.Err() != nil:
			// Stopped (its callers gave up, or Close): not a failure of
			// the base that a background refresh should wait out.
		case err != nil:
			m.failed[key] = m.o.now()
		default:
			delete(m.failed, key)
		}
		f.md, f.rebuilt, f.err = md, rebuilt, err
		close(f.done)
		m.mu.Unlock()
	}()
	return f
}

// refreshInBackground starts preparing a replacement for the base's stale
// builder unless one is under way, or the last attempt failed less than
// the retry delay ago.
func (m *Manager) refreshInBackground(ctx context.Context, key, base string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.flights[key] != nil {
		return
	}
	if t, ok := m.failed[key]; ok && m.o.now().Sub(t) < m.o.retryAfter {
		return
	}
	log := m.o.log.WithField("image", base)
	log.Info("builder is stale: preparing a new one in the background")
	f := m.startLocked(ctx, key, base, prepIfNeeded)
	f.background = true
	go func() {
		<-f.done
		if f.err != nil {
			var se *SetupError
			if errors.As(f.err, &se) {
				log = log.WithField("setup_log_tail", lastLines(se.Log, 20))
			}
			log.WithError(f.err).Warn("background refresh of a stale builder failed; builds keep using the stale one")
		}
	}()
}

// migrateLinks renames the current links of older vagents, one per base
// (current/<baseKey(base)>), to the recipe's: their builders stay current
// for the settings they were made with.
func (m *Manager) migrateLinks() {
	links, err := os.ReadDir(filepath.Join(m.dir, currentDirName))
	if err != nil {
		return
	}
	for _, l := range links {
		id, err := m.currentID(l.Name())
		if err != nil || id == "" {
			continue
		}
		md, err := readMeta(m.builderDir(id))
		if err != nil || l.Name() != baseKey(md.Base) || l.Name() == currentKeyOf(md) {
			continue
		}
		to := m.currentLink(currentKeyOf(md))
		if _, err := os.Lstat(to); errors.Is(err, fs.ErrNotExist) {
			_ = os.Rename(m.currentLink(l.Name()), to)
		} else {
			_ = os.Remove(m.currentLink(l.Name()))
		}
	}
}

// lastLines returns at most n last lines of b.
func lastLines(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Close stops the preparations under way (their callers get an error) and
// waits for them. Leases stay valid. Later Acquires fail with ErrClosed.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	for _, f := range m.flights {
		f.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

// current returns the base's current builder, nil if it has none.
func (m *Manager) current(key string) (*meta, error) {
	id, err := m.currentID(key)
	if err != nil || id == "" {
		return nil, err
	}
	md, err := m.loadMeta(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // a dangling link: removed by Prune
	}
	return md, err
}

func (m *Manager) loadMeta(id string) (*meta, error) {
	m.mu.Lock()
	md := m.metas[id]
	m.mu.Unlock()
	if md != nil {
		return md, nil
	}
	md, err := readMeta(m.builderDir(id))
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.metas[id] = md
	m.mu.Unlock()
	return md, nil
}

// fresh tells whether a builder is young enough and made the way this
// Manager makes them, from the base digest the store has now.
func (m *Manager) fresh(md *meta) bool {
	return !m.expired(md) && md.Recipe == m.recipe && !m.baseChanged(md)
}

// baseChanged tells whether the image store has another digest for the
// builder's base than the builder was made from (the base was pulled
// again since, by `vagent image pull` or another recipe's preparation).
// It reads the store's records: no network.
func (m *Manager) baseChanged(md *meta) bool {
	if m.store == nil {
		return false
	}
	d, ok := m.store.Recorded(md.Base)
	return ok && d != md.BaseDigest
}

// sayWhyPreparing tells log why a build waits for a new builder of base:
// cur (this recipe's, nil if none) was made from another base digest, or
// the base's builders were made with other settings.
func (m *Manager) sayWhyPreparing(log io.Writer, base string, cur *meta) {
	if log == nil {
		return
	}
	var why string
	switch {
	case cur != nil:
		d, _ := m.store.Recorded(base)
		why = fmt.Sprintf("the builder %s was made from %s, the image store now has %s", shortID(cur.ID), shortID(cur.BaseDigest.Hex), shortID(d.Hex))
	case m.otherRecipes(base):
		why = "the builders of this base were made with other builder settings (packages, repositories, mirror list or setup)"
	default:
		return // the first builder of the base: prepare says it
	}
	fmt.Fprintf(log, "==> vagent: %s: preparing a builder for %s with this build's settings; the build waits for it\n", why, base)
	m.logger(base).WithField("reason", why).Info("preparing a builder with the build's settings")
}

// otherRecipes tells whether base has builders made with another recipe.
func (m *Manager) otherRecipes(base string) bool {
	ents, _ := os.ReadDir(filepath.Join(m.dir, buildersDir))
	for _, e := range ents {
		if !validID(e.Name()) {
			continue
		}
		if md, err := m.loadMeta(e.Name()); err == nil && md.Base == base && md.Recipe != m.recipe {
			return true
		}
	}
	return false
}

func shortID(hex string) string {
	if len(hex) > 12 {
		return hex[:12]
	}
	return hex
}

// expired tells whether a builder is older than the maximum age. Prune
// and List go by age only: a `vagent builder` command may run with other
// settings than the agent, and must not take the agent's builders for
// stale because of that.
func (m *Manager) expired(md *meta) bool {
	return m.o.now().Sub(md.Created) >= m.o.maxAge
}

// lease takes a shared lock on the builder's directory (Prune and removal
// need an exclusive one) and counts the lease.
func (m *Manager) lease(md *meta) (*Lease, error) {
	dir := m.builderDir(md.ID)
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errGone
	}
	if err != nil {
		return nil, err
	}
	ok, err := lockfile.Lock(f, false, false)
	if err != nil || !ok || !sameFile(f, dir) {
		f.Close()
		if err != nil {
			return nil, err
		}
		return nil, errGone
	}
	m.mu.Lock()
	m.leases[md.ID]++
	m.mu.Unlock()
	l := &Lease{
		Rootfs: filepath.Join(dir, rootfsName), Base: md.Base,
		BaseDigest: md.BaseDigest, Digest: md.Digest, Created: md.Created,
	}
	l.release = sync.OnceFunc(func() {
		f.Close()
		m.mu.Lock()
		if m.leases[md.ID]--; m.leases[md.ID] <= 0 {
			delete(m.leases, md.ID)
		}
		last := m.leases[md.ID] == 0
		m.mu.Unlock()
		if !last {
			return
		}
		if id, err := m.currentID(currentKeyOf(md)); err == nil && id != md.ID {
			if _, err := m.removeBuilder(context.Background(), md.ID, false); err != nil {
				m.o.log.WithError(err).WithField("builder", md.ID[:12]).Warn("removing a superseded builder")
			}
		}
	})
	return l, nil
}

// removeBuilder removes builder id unless it is in use (then it reports
// false). The current link of its base is removed with it if it points
// to it. A builder directory is moved to tmp/ first, so that a crash in
// the middle leaves a stale temporary, never half a builder.
func (m *Manager) removeBuilder(ctx context.Context, id string, unlinkCurrent bool) (bool, error) {
	ok, _, _, err := m.removeBuilderBlobs(ctx, id, unlinkCurrent)
	return ok, err
}

// removeBuilderBlobs is removeBuilder that also reports the layout blobs
// it collected.
func (m *Manager) removeBuilderBlobs(ctx context.Context, id string, unlinkCurrent bool) (_ bool, blobs int, size int64, _ error) {
	dir := m.builderDir(id)
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, 0, nil
	}
	if err != nil {
		return false, 0, 0, err
	}
	defer f.Close()
	if ok, err := lockfile.Lock(f, true, false); err != nil || !ok {
		return false, 0, 0, err
	}
	md, merr := readMeta(dir)
	if merr == nil {
		key := currentKeyOf(md)
		if cur, err := m.currentID(key); err == nil && cur == id {
			if !unlinkCurrent {
				return false, 0, 0, nil
			}
			if err := os.Remove(m.currentLink(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return false, 0, 0, err
			}
		}
	}
	tmp, lock, err := m.newTemp("rm-")
	if err != nil {
		return false, 0, 0, err
	}
	defer lock.Close()
	if err := os.Rename(dir, filepath.Join(tmp, "builder")); err != nil {
		lockfile.RemoveTree(tmp)
		return false, 0, 0, err
	}
	m.mu.Lock()
	delete(m.metas, id)
	m.mu.Unlock()
	if err := lockfile.RemoveTree(tmp); err != nil {
		return true, 0, 0, err
	}
	blobs, size, err = m.removeImage(ctx, id)
	if err != nil {
		return true, blobs, size, err
	}
	m.o.log.WithField("builder", id[:12]).Info("removed builder")
	return true, blobs, size, nil
}

// collectSuperseded removes the builders that are not current, the stale
// current ones of other recipes than this Manager's (and, with stale, its
// own stale current ones) unless in use.
func (m *Manager) collectSuperseded(ctx context.Context, stale bool) (rep PruneReport, err error) {
	ents, err := os.ReadDir(filepath.Join(m.dir, buildersDir))
	if err != nil {
		return rep, err
	}
	for _, e := range ents {
		id := e.Name()
		if !validID(id) {
			continue
		}
		md, err := readMeta(m.builderDir(id))
		isCurrent := false
		if err == nil {
			cur, _ := m.currentID(currentKeyOf(md))
			isCurrent = cur == id
		}
		if isCurrent && (!m.expired(md) || (!stale && md.Recipe == m.recipe)) {
			continue
		}
		if err := rep.remove(ctx, m, id); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func (m *Manager) info(md *meta) Info {
	in := Info{
		ID: md.ID, Base: md.Base, BaseDigest: md.BaseDigest, Digest: md.Digest,
		Created: md.Created, Size: md.Size, LayerSize: md.LayerSize, Stale: m.expired(md),
		OtherSettings: md.Recipe != m.recipe,
	}
	if cur, err := m.currentID(currentKeyOf(md)); err == nil {
		in.Current = cur == md.ID
	}
	m.mu.Lock()
	in.InUse = m.leases[md.ID] > 0
	m.mu.Unlock()
	if !in.InUse {
		if f, err := os.Open(m.builderDir(md.ID)); err == nil {
			ok, err := lockfile.Lock(f, true, false)
			in.InUse = err == nil && !ok
			f.Close()
		}
	}
	return in
}

// List returns the builders on disk, sorted by base and age (newest
// first).
func (m *Manager) List() ([]Info, error) {
	ents, err := os.ReadDir(filepath.Join(m.dir, buildersDir))
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, e := range ents {
		if !validID(e.Name()) {
			continue
		}
		md, err := m.loadMeta(e.Name())
		if err != nil {
			continue // being removed, or not readable: Prune's business
		}
		out = append(out, m.info(md))
	}
	sortInfos(out)
	return out, nil
}

func sortInfos(in []Info) {
	less := func(a, b Info) bool {
		if a.Base != b.Base {
			return a.Base < b.Base
		}
		return a.Created.After(b.Created)
	}
	for i := 1; i < len(in); i++ {
		for j := i; j > 0 && less(in[j], in[j-1]); j-- {
			in[j], in[j-1] = in[j-1], in[j]
		}
	}
}

// Prune removes the builders that are superseded or stale, unless in use,
// dangling current links, index entries without a builder, the layout
// blobs nothing uses, and the leftovers of crashed processes.
func (m *Manager) Prune(ctx context.Context) (PruneReport, error) {
	temps, err := m.removeStaleTemps()
	if err != nil {
		return PruneReport{Temps: temps}, err
	}
	rep, err := m.collectSuperseded(ctx, true)
	rep.Temps = temps
	if err != nil {
		return rep, err
	}
	// Dangling current links.
	links, err := os.ReadDir(filepath.Join(m.dir, currentDirName))
	if err != nil {
		return rep, err
	}
	for _, l := range links {
		p := filepath.Join(m.dir, currentDirName, l.Name())
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			os.Remove(p)
		}
	}
	blobs, size, err := m.layout.Retain(ctx, func(d v1.Descriptor) bool {
		id := d.Annotations[annotationBuilder]
		if id != "" && validID(id) {
			if _, err := os.Stat(m.builderDir(id)); err == nil {
				return true
			}
		}
		return m.preparing(d.Annotations[annotationBase])
	})
	rep.Blobs += blobs
	rep.Bytes += size
	return rep, err
}

// preparing tells whether a builder for base is being prepared (by any
// process): its image may be in the layout before its directory is
// published.
func (m *Manager) preparing(base string) bool {
	f, err := os.Open(m.lockPath(baseKey(base)))
	if err != nil {
		return false
	}
	defer f.Close()
	ok, err := lockfile.Lock(f, true, false)
	return err == nil && !ok
}

func (m *Manager) lockPath(key string) string {
	return filepath.Join(m.dir, locksDirName, key+".lock")
}

// logger returns the Manager's logger with the image field.
func (m *Manager) logger(base string) logrus.FieldLogger {
	return m.o.log.WithField("image", base)
}
