package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/internal/config"
	"github.com/vieter-v/vagent/internal/lockfile"
	"github.com/vieter-v/vagent/sandbox"
)

// The host ids of a data dir's builds. Every vagent process on a data dir
// must map the same range (the package cache belongs to it, and
// sandbox.New refuses a second range), so the range is the data dir's: it
// is recorded in DATA/id-range.json. id_range.base in the configuration
// sets it (and the record follows); without it, the recorded range is
// used, and when there is none yet (or host ids in use overlap it now) a
// free block is picked from systemd's container range
// (sandbox.HostIDs.Pick) and recorded.

// idRangeFile is the data dir's record of its builds' id range.
const idRangeFile = "id-range.json"

// hostIDs tells which host ids are in use (tests replace it).
var hostIDs = sandbox.SystemHostIDs

// idRangeRecord is DATA/id-range.json.
type idRangeRecord struct {
	sandbox.IDRange
	// Picked tells that vagent chose the range (no id_range.base).
	Picked bool `json:"picked"`
}

// idRangeChoice is a data dir's id range and how it came about.
type idRangeChoice struct {
	sandbox.IDRange
	// How says where the range comes from, for the start line and
	// `vagent check`.
	How string
	// Conflicts are host ids in use in a configured range that
	// id_range.allow_conflicts accepts.
	Conflicts []string
}

// resolveIDRange returns the id range of builds on dataDir with the
// configuration cfg (nil: none). With record, a picked or configured range
// is written to the data dir (created if missing); without, nothing is
// written and a range not yet recorded is the one that would be picked.
// A configured range that host ids use is a configuration error unless
// id_range.allow_conflicts says so.
func resolveIDRange(dataDir string, cfg *config.Config, record bool, log logrus.FieldLogger) (idRangeChoice, error) {
	size := uint32(65536)
	if cfg != nil && cfg.IDRange.Size != 0 {
		size = cfg.IDRange.Size
	}
	file := filepath.Join(dataDir, idRangeFile)
	if cfg != nil && cfg.IDRange.Base != 0 {
		r := sandbox.IDRange{Base: cfg.IDRange.Base, Size: size}
		conflicts := hostIDs.Conflicts(r)
		if err := checkIDRange(cfg, conflicts); err != nil {
			return idRangeChoice{}, &exitError{code: exitConfig, err: err}
		}
		c := idRangeChoice{IDRange: r, How: "configured (id_range)", Conflicts: conflicts}
		if rec, err := readIDRange(file); record && (err != nil || rec.IDRange != r || rec.Picked) {
			if err := withDataDirLock(dataDir, func() error { return writeIDRange(file, idRangeRecord{IDRange: r}) }); err != nil {
				return idRangeChoice{}, err
			}
		}
		return c, nil
	}
	// The data dir's range, if it is still free.
	usable := func(rec idRangeRecord, err error) bool {
		return err == nil && rec.Valid() && rec.Size == size && len(hostIDs.Conflicts(rec.IDRange)) == 0
	}
	if rec, err := readIDRange(file); usable(rec, err) {
		return idRangeChoice{IDRange: rec.IDRange, How: "recorded in " + file}, nil
	}
	seed := dataDir
	if abs, err := filepath.Abs(dataDir); err == nil {
		seed = abs
	}
	if !record {
		r, err := hostIDs.Pick(seed, size)
		if err != nil {
			return idRangeChoice{}, fmt.Errorf("id range: %w", err)
		}
		return idRangeChoice{IDRange: r, How: "picked free; recorded in " + file + " at the first build"}, nil
	}
	var c idRangeChoice
	err := withDataDirLock(dataDir, func() error {
		// Another process may have picked it meanwhile.
		old, err := readIDRange(file)
		if usable(old, err) {
			c = idRangeChoice{IDRange: old.IDRange, How: "recorded in " + file}
			return nil
		}
		r, err := hostIDs.Pick(seed, size)
		if err != nil {
			return fmt.Errorf("id range: %w", err)
		}
		if err := writeIDRange(file, idRangeRecord{IDRange: r, Picked: true}); err != nil {
			return err
		}
		c = idRangeChoice{IDRange: r, How: "picked free, recorded in " + file}
		switch {
		case old.Valid():
			log.WithFields(logrus.Fields{"data_dir": dataDir, "old": old.IDRange.String(), "id_range": r.String(),
				"conflicts": strings.Join(hostIDs.Conflicts(old.IDRange), ", ")}).
				Warn("host ids in use overlap the data dir's id range: builds use a newly picked one (the package cache follows it)")
		default:
			log.WithFields(logrus.Fields{"data_dir": dataDir, "id_range": r.String()}).Info("picked a free host id range for the builds of this data dir")
		}
		return nil
	})
	return c, err
}

// readIDRange reads a data dir's record.
func readIDRange(file string) (idRangeRecord, error) {
	var rec idRangeRecord
	b, err := os.ReadFile(file)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return idRangeRecord{}, fmt.Errorf("%s: %w", file, err)
	}
	return rec, nil
}

func writeIDRange(file string, rec idRangeRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := lockfile.WriteFile(file, append(b, '\n'), lockfile.WriteOptions{Perm: 0o644, Sync: true}); err != nil {
		return fmt.Errorf("recording the id range: %w", err)
	}
	return nil
}

// withDataDirLock runs fn holding an exclusive lock on the data dir
// (created if missing) itself: one process at a time picks its range.
func withDataDirLock(dataDir string, fn func() error) error {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	d, err := os.Open(dataDir)
	if err != nil {
		return err
	}
	defer d.Close()
	if _, err := lockfile.Lock(d, true, true); err != nil {
		return fmt.Errorf("locking %s: %w", dataDir, err)
	}
	return fn()
}

// openSandbox opens the sandbox of dataDir for builds with the data dir's
// id range (resolveIDRange, recorded; rootless, the user's subordinate
// ids, and nothing is recorded), cfg's limits (nil: none) and
// seccomp as asked. Another vagent process on the data dir with another
// range, or an older vagent that holds it alone, is refused with a clear
// message.
func openSandbox(log logrus.FieldLogger, dataDir string, cfg *config.Config, seccomp bool) (*sandbox.Manager, idRangeChoice, error) {
	opts := []sandbox.Option{sandbox.WithLogger(log), sandbox.WithSeccomp(seccomp)}
	if cfg != nil {
		opts = append(opts, sandboxOptions(cfg)...)
	}
	var ir idRangeChoice
	if rootless() && cfg != nil && cfg.IDRange.Base != 0 {
		log.WithField("id_range", cfg.IDRange.Base).Warn("id_range is not used by an ordinary user's agent: builds map to the user's subordinate ids (docs/rootless.md)")
	}
	if !rootless() { // rootless, builds map to the user's subordinate ids: no id-range.json
		var err error
		if ir, err = resolveIDRange(dataDir, cfg, true, log); err != nil {
			return nil, ir, err
		}
		if len(ir.Conflicts) > 0 {
			log.WithField("conflicts", strings.Join(ir.Conflicts, ", ")).Warn("id_range overlaps host ids in use (allowed by id_range.allow_conflicts)")
		}
		opts = append(opts, sandbox.WithIDMap(ir.Base, ir.Size))
	}
	sb, err := sandbox.New(filepath.Join(dataDir, "sandbox"), opts...)
	switch {
	case errors.Is(err, sandbox.ErrLocked):
		return nil, ir, fmt.Errorf("sandbox: %w", err)
	case errors.Is(err, sandbox.ErrIDRangeInUse):
		return nil, ir, fmt.Errorf("%w (give both the same id_range, or none: the data dir's)", err)
	case errors.Is(err, fs.ErrPermission) && rootless():
		return nil, ir, fmt.Errorf("sandbox: %w (an ordinary user's vagent needs a data dir of its own, by default %s: see docs/rootless.md)", err, defaultDataDir)
	case err != nil:
		return nil, ir, fmt.Errorf("sandbox: %w", err)
	}
	return sb, ir, nil
}
