package poll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// LogSelector picks a build log in a spool: the build of a slot, or of a
// target.
type LogSelector struct {
	Slot   int // ≥ 0: the build of this slot; < 0: any slot
	Target int // > 0: the build of this target; 0: any target
}

func (s LogSelector) String() string {
	switch {
	case s.Slot >= 0 && s.Target > 0:
		return fmt.Sprintf("slot %d, target %d", s.Slot, s.Target)
	case s.Slot >= 0:
		return fmt.Sprintf("slot %d", s.Slot)
	case s.Target > 0:
		return fmt.Sprintf("target %d", s.Target)
	}
	return "any build"
}

func (s LogSelector) match(e *spoolEntry) bool {
	return (s.Slot < 0 || e.Slot == s.Slot) && (s.Target <= 0 || e.Job.TargetID == s.Target)
}

// ErrNoLog means the spool holds no log of the selected build: it did not
// start, or its log was uploaded already (the server has it).
var ErrNoLog = errors.New("no such log in the spool")

// followPoll is how often a followed log is checked for more output.
const followPoll = 200 * time.Millisecond

// FollowLog writes the log of the build sel selects in the spool of
// dataDir to w, as it will be uploaded: its header (LogHeader, as known
// now), then what the build wrote. A running build is preferred, then the
// newest log still in the spool. With follow it goes on writing what the
// build writes until the build ended and its end was recorded, the log
// left the spool (uploaded), or ctx is done; a build that an agent that
// died left "running" is followed until ctx is done. It changes nothing
// and may run while an agent uses the directory.
func FollowLog(ctx context.Context, dataDir string, sel LogSelector, follow bool, w io.Writer) error {
	s := &spool{pending: filepath.Join(dataDir, "logs", "pending"), rejected: filepath.Join(dataDir, "logs", "rejected")}
	if _, err := os.Stat(s.pending); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", sel, ErrNoLog)
		}
		return fmt.Errorf("reading spool: %w", err)
	}
	entries, _ := s.list(true) // damaged entries are left out
	var pick *spoolEntry
	for _, e := range entries {
		if !sel.match(e) {
			continue
		}
		// Entries sort by their start: the last match is the newest.
		if pick == nil || e.State == stateRunning || pick.State != stateRunning {
			pick = e
		}
	}
	if pick == nil {
		return fmt.Errorf("%s: %w", sel, ErrNoLog)
	}
	path := s.logPath(pick)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", sel, ErrNoLog)
		}
		return err
	}
	defer f.Close()
	// The entry as the open file has it now (it changes as the build runs).
	current := func() (*spoolEntry, error) {
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		return decodeHeader(f, fi.Size())
	}
	e, err := current()
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if _, err := w.Write(e.logHeader()); err != nil {
		return err
	}
	off := e.bodyOffset()
	buf := make([]byte, 64<<10)
	// copyTo writes the log up to end (-1: the end of the file).
	copyTo := func(end int64) error {
		for end < 0 || off < end {
			p := buf
			if end >= 0 {
				p = buf[:min(int64(len(buf)), end-off)]
			}
			n, err := f.ReadAt(p, off)
			if n > 0 {
				if _, werr := w.Write(p[:n]); werr != nil {
					return werr
				}
				off += int64(n)
			}
			if errors.Is(err, io.EOF) || n == 0 {
				return nil
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	var t *time.Ticker
	for {
		if e.State == stateFinished && e.Size >= 0 {
			return copyTo(e.bodyOffset() + e.Size)
		}
		if err := copyTo(-1); err != nil {
			return err
		}
		if !follow {
			return nil
		}
		if _, err := os.Stat(path); err != nil {
			// Uploaded (or moved to logs/rejected): the file is complete.
			return copyTo(-1)
		}
		if t == nil {
			t = time.NewTicker(followPoll)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if e, err = current(); err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
}
