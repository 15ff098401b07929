package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vieter-v/vagent/internal/lockfile"
)

// meta is a builder's meta.json. It is written once, before the builder
// directory is published, and never changed.
type meta struct {
	Version     int       `json:"version"`
	ID          string    `json:"id"`
	Base        string    `json:"base"`
	BaseDigest  v1.Hash   `json:"base_digest"`
	Digest      v1.Hash   `json:"digest"`
	LayerDigest v1.Hash   `json:"layer_digest"`
	LayerSize   int64     `json:"layer_size"`
	Size        int64     `json:"size"` // compressed image: config and every layer
	Created     time.Time `json:"created"`
	Recipe      string    `json:"recipe"`
	Packages    []string  `json:"packages"`
}

const metaVersion = 1

// Directory names under the Manager's directory.
const (
	layoutDirName  = "oci"
	buildersDir    = "b"
	currentDirName = "current"
	locksDirName   = "locks"
	tmpDirName     = "tmp"
	metaFile       = "meta.json"
	rootfsName     = "rootfs"
)

// baseKey names a base reference in file names: its preparation lock
// (one preparation of a base at a time, across processes).
func baseKey(ref string) string {
	h := sha256.Sum256([]byte(ref))
	return hex.EncodeToString(h[:16])
}

// currentKey names the current builder of a base made with a recipe: each
// recipe (the builder settings of a process) has a current builder of its
// own, so an agent and a `vagent build` with other settings on one data
// dir do not replace each other's.
func currentKey(base, recipe string) string { return baseKey(base + "\x00" + recipe) }

// currentKeyOf is the current link a builder may be the target of.
func currentKeyOf(md *meta) string { return currentKey(md.Base, md.Recipe) }

func (m *Manager) builderDir(id string) string { return filepath.Join(m.dir, buildersDir, id) }
func (m *Manager) currentLink(key string) string {
	return filepath.Join(m.dir, currentDirName, key)
}

// validID accepts what builder directories are named: a manifest digest's
// hex.
func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

func readMeta(dir string) (*meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return nil, err
	}
	var md meta
	if err := json.Unmarshal(b, &md); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, metaFile), err)
	}
	if md.Version != metaVersion || !validID(md.ID) {
		return nil, fmt.Errorf("reading %s: unknown format", filepath.Join(dir, metaFile))
	}
	return &md, nil
}

// setCurrent points the base's current link at builder id, atomically.
func (m *Manager) setCurrent(key, id string) error {
	link := m.currentLink(key)
	tmp := link + ".tmp-" + id[:12]
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("..", buildersDir, id), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// currentID returns the id of the base's current builder, "" if none.
func (m *Manager) currentID(key string) (string, error) {
	t, err := os.Readlink(m.currentLink(key))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	id := filepath.Base(t)
	if !validID(id) {
		return "", fmt.Errorf("current builder link %s: bad target %q", m.currentLink(key), t)
	}
	return id, nil
}

// newTemp creates a directory under tmp/, locked exclusively by the
// returned file until it is closed (or the process dies).
func (m *Manager) newTemp(prefix string) (string, *os.File, error) {
	return lockfile.MkdirTemp(filepath.Join(m.dir, tmpDirName), prefix)
}

// removeStaleTemps removes the temporaries whose writer is gone: the
// half-prepared builders of a crashed process.
func (m *Manager) removeStaleTemps() (int, error) {
	return lockfile.RemoveStale(filepath.Join(m.dir, tmpDirName))
}
