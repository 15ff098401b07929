package poll

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// entry states in a sidecar.
const (
	stateRunning  = "running"
	stateFinished = "finished"
)

// spoolEntry is the sidecar of a spooled log: what to upload and how far
// its delivery got.
type spoolEntry struct {
	ID       string `json:"-"`
	Job      Job    `json:"job"`
	Arch     string `json:"arch"`
	Slot     int    `json:"slot"`
	Start    int64  `json:"start"` // Unix seconds
	End      int64  `json:"end"`
	ExitCode int    `json:"exit_code"`
	Result   Result `json:"result,omitempty"`
	State    string `json:"state"`
	Requeue  bool   `json:"requeue,omitempty"`  // hand the job back
	Requeued bool   `json:"requeued,omitempty"` // done
}

// spool keeps logs on disk until the server accepts them:
// <data_dir>/logs/pending/<id>.log and <id>.json. A sidecar is written
// before its log is created and removed before its log, so a log without
// a sidecar is garbage and a sidecar without a log stands for an empty log.
type spool struct {
	pending, rejected string
	// fsync makes entries survive a power loss, not only a process crash.
	fsync bool
}

func openSpool(dataDir string, fsync bool) (*spool, error) {
	s := &spool{pending: filepath.Join(dataDir, "logs", "pending"), rejected: filepath.Join(dataDir, "logs", "rejected"), fsync: fsync}
	for _, d := range []string{s.pending, s.rejected} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating spool: %w", err)
		}
	}
	return s, nil
}

func (s *spool) logPath(e *spoolEntry) string  { return filepath.Join(s.pending, e.ID+".log") }
func (s *spool) metaPath(e *spoolEntry) string { return filepath.Join(s.pending, e.ID+".json") }

func newEntryID(now time.Time, target int) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-t%d-%s", now.UTC().Format("20060102T150405.000000000"), target, hex.EncodeToString(b[:]))
}

// create writes e's sidecar (state running) and creates its log file.
func (s *spool) create(e *spoolEntry) (f *os.File, retErr error) {
	e.State = stateRunning
	if err := s.save(e); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = os.Remove(s.metaPath(e))
		}
	}()
	f, err := os.OpenFile(s.logPath(e), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating log: %w", err)
	}
	return f, nil
}

// save writes e's sidecar atomically: temporary file, fsync, rename,
// fsync of the directory.
func (s *spool) save(e *spoolEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return writeAtomic(s.metaPath(e), b, s.fsync)
}

func writeAtomic(path string, b []byte, fsync bool) (retErr error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	defer func() {
		if retErr != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	_, err = tmp.Write(b)
	if err == nil && fsync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	if !fsync {
		return nil
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// remove deletes a delivered entry: sidecar first, then log. It does not
// sync: an entry that comes back after a power loss is uploaded again,
// which at-least-once delivery allows.
func (s *spool) remove(e *spoolEntry) error {
	if err := os.Remove(s.metaPath(e)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Remove(s.logPath(e)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// reject moves an entry the server refused for good out of the way.
func (s *spool) reject(e *spoolEntry) error {
	if err := os.Rename(s.logPath(e), filepath.Join(s.rejected, e.ID+".log")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Rename(s.metaPath(e), filepath.Join(s.rejected, e.ID+".json"))
}

// list reads every pending entry, removing temporary files and logs
// without a sidecar, and creating the missing log of a sidecar.
func (s *spool) list() ([]*spoolEntry, error) {
	des, err := os.ReadDir(s.pending)
	if err != nil {
		return nil, fmt.Errorf("reading spool: %w", err)
	}
	metas := map[string]bool{}
	for _, de := range des {
		if id, ok := strings.CutSuffix(de.Name(), ".json"); ok && !strings.HasPrefix(id, ".") {
			metas[id] = true
		}
	}
	var out []*spoolEntry
	var errs []error
	for _, de := range des {
		name := de.Name()
		p := filepath.Join(s.pending, name)
		switch {
		case strings.HasPrefix(name, ".tmp-"):
			errs = append(errs, os.Remove(p))
		case strings.HasSuffix(name, ".log"):
			if !metas[strings.TrimSuffix(name, ".log")] {
				errs = append(errs, os.Remove(p))
			}
		case strings.HasSuffix(name, ".json"):
			b, err := os.ReadFile(p)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			e := &spoolEntry{ID: strings.TrimSuffix(name, ".json")}
			if err := json.Unmarshal(b, e); err != nil {
				// A sidecar is replaced atomically, so this is not a torn
				// write: keep it aside for a person to look at.
				errs = append(errs, fmt.Errorf("sidecar %s: %w", name, err), s.reject(e))
				continue
			}
			if _, err := os.Stat(s.logPath(e)); errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, os.WriteFile(s.logPath(e), nil, 0o600))
			}
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, errors.Join(errs...)
}
