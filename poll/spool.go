package poll

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// entry states in a spool header.
const (
	stateRunning  = "running"
	stateFinished = "finished"
)

// spoolEntry is the header of a spooled log: what to upload and how far
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
	// Size is the length of the log once the build finished (-1 while it
	// runs). A shorter file means its end was lost (power loss).
	Size     int64 `json:"size"`
	Requeue  bool  `json:"requeue,omitempty"`  // hand the job back
	Requeued bool  `json:"requeued,omitempty"` // done (or given up)
	// RequeueSent counts requeue requests that may have reached the
	// server; it is saved before each request (see maxRequeueSends).
	RequeueSent int `json:"requeue_sent,omitempty"`
	// Origin and Fields make the log's header (LogHeader), written in
	// front of the log when it is uploaded. Entries of earlier versions
	// have neither, and their logs no header.
	Origin *Origin       `json:"origin,omitempty"`
	Fields []HeaderField `json:"fields,omitempty"`

	seq  uint64 // sequence number of the header copy last written
	slot int64  // size of one header copy, fixed when the entry is created
}

// Origin is who ran a build, for its log's header: the agent's name and
// version and the host.
type Origin struct {
	Agent   string `json:"agent,omitempty"`
	Version string `json:"version,omitempty"`
	Host    string `json:"host,omitempty"`
}

// logHeader returns the header of e's log, nil for an entry without one.
func (e *spoolEntry) logHeader() []byte {
	if e.Origin == nil {
		return nil
	}
	return LogHeader{Agent: e.Origin.Agent, Version: e.Origin.Version, Host: e.Origin.Host, Slot: e.Slot,
		Arch: e.Arch, Job: e.Job, Start: time.Unix(e.Start, 0), Fields: e.Fields}.Text()
}

// The spool keeps each log in one file, <data_dir>/logs/pending/<id>.log,
// whose fixed-size header holds the entry:
//
//	preamble  32 bytes   "vagent-spool 1 hdr=%08d", space padded, "\n"
//	copy A    hdr bytes  header copy (odd sequence numbers)
//	copy B    hdr bytes  header copy (even sequence numbers)
//	log       the build output
//
// A header copy is a line "%016x %08x %08x\n" (sequence number, CRC-32C
// of the sequence number and the JSON, JSON length), the JSON of the
// entry, space padding and "\n". An update rewrites the older copy in
// place, so a torn write (power loss) leaves the previous state readable:
// the valid copy with the highest sequence number wins. The header is
// plain text, so `less` shows a pending log with its entry on top.
//
// Compared with a log plus an atomically replaced JSON sidecar this is one
// file creation per job instead of three, no renames, one unlink, and with
// fsync one file sync per job and one directory sync shared by the entries
// created at the same time, instead of three file and two directory syncs.
const (
	preambleSize = 32
	copyPrefix   = 35 // "%016x %08x %08x\n"
	maxHeader    = 16 << 20
	spoolMagic   = "vagent-spool 1 hdr="
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// spool keeps logs on disk until the server accepts them.
type spool struct {
	pending, rejected string
	arch              string // of entries whose header was lost
	// fsync makes entries survive a power loss, not only a process crash.
	fsync   bool
	dirSync groupSync
}

func openSpool(dataDir, arch string, fsync bool) (*spool, error) {
	s := &spool{pending: filepath.Join(dataDir, "logs", "pending"), rejected: filepath.Join(dataDir, "logs", "rejected"), arch: arch, fsync: fsync}
	for _, d := range []string{s.pending, s.rejected} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating spool: %w", err)
		}
	}
	if err := s.pruneRejected(time.Now()); err != nil {
		return nil, fmt.Errorf("pruning logs/rejected: %w", err)
	}
	return s, nil
}

func (s *spool) logPath(e *spoolEntry) string { return filepath.Join(s.pending, e.ID+".log") }

// An entry's id, its file name without ".log", names its start time, its
// target and its force flag ("t42f"), so that a job can be handed back even
// when a power loss destroyed the header of a new entry: with fsync, the
// directory is synced at creation, the header only when the build ends.
const idTime = "20060102T150405.000000000"

func newEntryID(now time.Time, j Job) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	f := ""
	if j.Force {
		f = "f"
	}
	return fmt.Sprintf("%s-t%d%s-%s", now.UTC().Format(idTime), j.TargetID, f, hex.EncodeToString(b[:]))
}

// parseEntryID returns what the id of an entry says about its job.
func parseEntryID(id string) (start time.Time, target int, force bool, ok bool) {
	parts := strings.Split(id, "-")
	if len(parts) != 3 || !strings.HasPrefix(parts[1], "t") {
		return time.Time{}, 0, false, false
	}
	start, err := time.Parse(idTime, parts[0])
	if err != nil {
		return time.Time{}, 0, false, false
	}
	t, force := strings.CutSuffix(parts[1][1:], "f")
	target, err = strconv.Atoi(t)
	if err != nil || target < 0 {
		return time.Time{}, 0, false, false
	}
	return start, target, force, true
}

// bodyOffset is where the log starts in the entry's file.
func (e *spoolEntry) bodyOffset() int64 { return preambleSize + 2*e.slot }

// headerSize returns the size of one header copy for e: large enough for
// every later state of the entry, whose variable fields are bounded.
func headerSize(e *spoolEntry) (int64, error) {
	w := *e
	w.End, w.ExitCode, w.Size = -1<<63, -1<<63, -1<<63
	w.Result, w.State, w.Requeue, w.Requeued, w.RequeueSent = ResultInterrupted, stateFinished, true, true, maxRequeueSends
	// The executor's header fields come later, up to their bounds; '<'
	// is the byte JSON writes longest (\u003c).
	w.Fields = nil
	for i := range MaxHeaderFields {
		w.Fields = append(w.Fields, HeaderField{Key: strings.Repeat(string(rune('a'+i)), 32), Value: strings.Repeat("<", MaxHeaderValueBytes)})
	}
	b, err := json.Marshal(&w)
	if err != nil {
		return 0, err
	}
	n := int64(copyPrefix+len(b)+1+511) &^ 511
	if n > maxHeader {
		return 0, fmt.Errorf("spool header of %d bytes: job too large", n)
	}
	return n, nil
}

// encodeCopy returns the next header copy of e and its offset in the file.
func encodeCopy(e *spoolEntry) ([]byte, int64, error) {
	js, err := json.Marshal(e)
	if err != nil {
		return nil, 0, err
	}
	if int64(copyPrefix+len(js)+1) > e.slot {
		return nil, 0, fmt.Errorf("spool header overflow (%d bytes)", len(js))
	}
	e.seq++
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], e.seq)
	crc := crc32.Update(crc32.Checksum(seq[:], castagnoli), castagnoli, js)
	b := make([]byte, 0, e.slot)
	b = fmt.Appendf(b, "%016x %08x %08x\n", e.seq, crc, len(js))
	b = append(b, js...)
	b = append(b, bytes.Repeat([]byte{' '}, int(e.slot)-len(b)-1)...)
	b = append(b, '\n')
	off := int64(preambleSize)
	if e.seq%2 == 0 {
		off += e.slot
	}
	return b, off, nil
}

// fileHeader returns the preamble and the header copies of a new entry.
func fileHeader(e *spoolEntry) ([]byte, error) {
	e.State, e.Size, e.seq = stateRunning, -1, 0
	var err error
	if e.slot, err = headerSize(e); err != nil {
		return nil, err
	}
	first, _, err := encodeCopy(e)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 0, e.bodyOffset())
	buf = fmt.Appendf(buf, "%s%08d", spoolMagic, e.slot)
	buf = append(buf, bytes.Repeat([]byte{' '}, preambleSize-1-len(buf))...)
	buf = append(buf, '\n')
	buf = append(buf, first...)
	buf = append(buf, bytes.Repeat([]byte{' '}, int(e.slot)-1)...) // copy B: not valid yet
	buf = append(buf, '\n')
	return buf, nil
}

// create creates e's file with its header (state running) and returns it
// open for writing the log. With fsync, the directory is synced before
// create returns (shared with the entries created at the same time): the
// entry's name, which names its job, survives a power loss; its header is
// synced with the log when the build ends.
func (s *spool) create(e *spoolEntry) (f *os.File, retErr error) {
	buf, err := fileHeader(e)
	if err != nil {
		return nil, err
	}
	f, err = os.OpenFile(s.logPath(e), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating log: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(buf); err != nil {
		return nil, fmt.Errorf("writing log header: %w", err)
	}
	if s.fsync {
		if err := s.dirSync.do(func() error { return syncDir(s.pending) }); err != nil {
			return nil, fmt.Errorf("syncing spool: %w", err)
		}
	}
	return f, nil
}

// rewrite replaces the file of an entry whose header was lost with a new
// header (state running) and an empty log; a non-empty old file is moved
// to logs/rejected.
func (s *spool) rewrite(e *spoolEntry) error {
	buf, err := fileHeader(e)
	if err != nil {
		return err
	}
	// What the file held is kept aside for a person to look at.
	if fi, err := os.Stat(s.logPath(e)); err == nil && fi.Size() > 0 {
		if err := os.Rename(s.logPath(e), filepath.Join(s.rejected, e.ID+".log")); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(s.logPath(e), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(buf)
	if err == nil && s.fsync {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// update writes e's header to its open file f, and syncs the file (the log
// and the header at once) with fsync.
func (s *spool) update(f *os.File, e *spoolEntry) error {
	b, off, err := encodeCopy(e)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("writing log header: %w", err)
	}
	if s.fsync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("syncing log: %w", err)
		}
	}
	return nil
}

// write writes e's header to its open file f without syncing: for what
// a build reports while it runs (its header fields), which a power loss
// may take back.
func (s *spool) write(f *os.File, e *spoolEntry) error {
	b, off, err := encodeCopy(e)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("writing log header: %w", err)
	}
	return nil
}

// save writes e's header.
func (s *spool) save(e *spoolEntry) error {
	f, err := os.OpenFile(s.logPath(e), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	return errors.Join(s.update(f, e), f.Close())
}

// body opens e's log for reading, as it is uploaded: its header
// (LogHeader), then what the build wrote. The caller closes the file.
func (s *spool) body(e *spoolEntry) (*os.File, *io.SectionReader, error) {
	f, err := os.Open(s.logPath(e))
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	n := fi.Size() - e.bodyOffset()
	if e.Size >= 0 && e.Size < n {
		n = e.Size
	}
	log := io.NewSectionReader(f, e.bodyOffset(), max(n, 0))
	head := e.logHeader()
	if len(head) == 0 {
		return f, log, nil
	}
	return f, io.NewSectionReader(concatReaderAt{head, log}, 0, int64(len(head))+log.Size()), nil
}

// concatReaderAt reads head, then tail.
type concatReaderAt struct {
	head []byte
	tail *io.SectionReader
}

func (c concatReaderAt) ReadAt(p []byte, off int64) (int, error) {
	h := int64(len(c.head))
	if off >= h {
		return c.tail.ReadAt(p, off-h)
	}
	n := copy(p, c.head[off:])
	if n == len(p) {
		return n, nil
	}
	m, err := c.tail.ReadAt(p[n:], 0)
	return n + m, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// remove deletes a delivered entry. It does not sync: an entry that comes
// back after a power loss is uploaded again, which at-least-once delivery
// allows.
func (s *spool) remove(e *spoolEntry) error {
	if err := os.Remove(s.logPath(e)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// reject moves an entry the server refused for good out of the way, then
// prunes logs/rejected.
func (s *spool) reject(e *spoolEntry) error {
	if err := os.Rename(s.logPath(e), filepath.Join(s.rejected, e.ID+".log")); err != nil {
		return err
	}
	return s.pruneRejected(time.Now())
}

// What logs/rejected keeps for a person to look at: files younger than
// rejectedMaxAge, the newest first, up to rejectedMaxBytes in all.
const (
	rejectedMaxAge   = 30 * 24 * time.Hour
	rejectedMaxBytes = 256 << 20
)

// pruneRejected removes from logs/rejected what is older than
// rejectedMaxAge, then the oldest files until the rest fits in
// rejectedMaxBytes. Only regular files are looked at.
func (s *spool) pruneRejected(now time.Time) error {
	des, err := os.ReadDir(s.rejected)
	if err != nil {
		return err
	}
	type file struct {
		name string
		mod  time.Time
		size int64
	}
	var files []file
	var errs []error
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		if now.Sub(fi.ModTime()) > rejectedMaxAge {
			errs = append(errs, os.Remove(filepath.Join(s.rejected, de.Name())))
			continue
		}
		files = append(files, file{de.Name(), fi.ModTime(), fi.Size()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.After(files[j].mod) })
	var total int64
	for _, f := range files {
		total += f.size
		if total > rejectedMaxBytes {
			errs = append(errs, os.Remove(filepath.Join(s.rejected, f.name)))
		}
	}
	return errors.Join(errs...)
}

// list reads every pending entry. An entry whose header was lost (a power
// loss soon after its creation) is rebuilt from its name as a running
// build with an empty log. Unless readOnly, that is written back, and a
// file with neither a valid header nor a valid name is moved to
// logs/rejected for a person to look at.
func (s *spool) list(readOnly bool) ([]*spoolEntry, error) {
	des, err := os.ReadDir(s.pending)
	if err != nil {
		return nil, fmt.Errorf("reading spool: %w", err)
	}
	var out []*spoolEntry
	var errs []error
	for _, de := range des {
		id, ok := strings.CutSuffix(de.Name(), ".log")
		if !ok || !de.Type().IsRegular() || strings.HasPrefix(id, ".") {
			continue
		}
		e, err := readEntry(filepath.Join(s.pending, de.Name()))
		if errors.Is(err, errBadHeader) {
			if start, target, force, ok := parseEntryID(id); ok {
				e = &spoolEntry{ID: id, Job: Job{TargetID: target, Force: force}, Arch: s.arch, Slot: -1, Start: start.Unix()}
				if !readOnly {
					err = s.rewrite(e)
				} else {
					err = nil
				}
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("spool entry %s: %w", de.Name(), err))
			if !readOnly {
				errs = append(errs, os.Rename(filepath.Join(s.pending, de.Name()), filepath.Join(s.rejected, de.Name())))
			}
			continue
		}
		e.ID = id
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, errors.Join(errs...)
}

var errBadHeader = errors.New("no valid spool header")

// readEntry reads the header of the spool file at path and checks that
// the log it describes is complete.
func readEntry(path string) (*spoolEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	e, err := decodeHeader(f, fi.Size())
	if err != nil {
		return nil, err
	}
	if e.State == stateFinished && e.Size >= 0 && fi.Size()-e.bodyOffset() < e.Size {
		// The header is newer than the end of the log (power loss
		// between their writes): report it as interrupted.
		e.State = stateRunning
	}
	return e, nil
}

// decodeHeader parses the header of a spool file of the given size.
func decodeHeader(r io.ReaderAt, size int64) (*spoolEntry, error) {
	var pre [preambleSize]byte
	if _, err := r.ReadAt(pre[:], 0); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadHeader, err)
	}
	digits, ok := strings.CutPrefix(string(pre[:len(spoolMagic)+8]), spoolMagic)
	if !ok {
		return nil, fmt.Errorf("%w: bad preamble", errBadHeader)
	}
	slot, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || slot < 512 || slot > maxHeader || slot%512 != 0 || size < preambleSize+2*slot {
		return nil, fmt.Errorf("%w: bad header size", errBadHeader)
	}
	buf := make([]byte, 2*slot)
	if _, err := r.ReadAt(buf, preambleSize); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadHeader, err)
	}
	var best *spoolEntry
	for i := range int64(2) {
		e, ok := decodeCopy(buf[i*slot : (i+1)*slot])
		if ok && (best == nil || e.seq > best.seq) {
			best = e
		}
	}
	if best == nil {
		return nil, errBadHeader
	}
	best.slot = slot
	return best, nil
}

func decodeCopy(b []byte) (*spoolEntry, bool) {
	if len(b) < copyPrefix || b[16] != ' ' || b[25] != ' ' || b[34] != '\n' {
		return nil, false
	}
	seq, err1 := strconv.ParseUint(string(b[:16]), 16, 64)
	crc, err2 := strconv.ParseUint(string(b[17:25]), 16, 32)
	n, err3 := strconv.ParseUint(string(b[26:34]), 16, 32)
	if err1 != nil || err2 != nil || err3 != nil || n > uint64(len(b)-copyPrefix) {
		return nil, false
	}
	js := b[copyPrefix : copyPrefix+int(n)]
	var sb [8]byte
	binary.BigEndian.PutUint64(sb[:], seq)
	if crc32.Update(crc32.Checksum(sb[:], castagnoli), castagnoli, js) != uint32(crc) {
		return nil, false
	}
	e := &spoolEntry{}
	if err := json.Unmarshal(js, e); err != nil {
		return nil, false
	}
	e.seq = seq
	return e, true
}

// groupSync runs a sync function on behalf of many callers: a caller
// waits for a sync that started after it called, and callers that arrive
// while one runs share the next.
type groupSync struct {
	mu                sync.Mutex
	cond              *sync.Cond
	started, finished uint64
	running           bool
	err               error
}

func (g *groupSync) do(fn func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
	target := g.started + 1
	for g.finished < target {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		n := g.started
		g.mu.Unlock()
		err := fn()
		g.mu.Lock()
		g.running, g.finished, g.err = false, n, err
		g.cond.Broadcast()
	}
	return g.err
}
