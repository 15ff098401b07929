package vieterserver

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Log is an uploaded build log.
type Log struct {
	ID        int       `json:"id"`
	TargetID  int       `json:"target_id"`
	StartTime time.Time `json:"start_time"`
	EndTime   time.Time `json:"end_time"`
	Arch      string    `json:"arch"`
	ExitCode  int       `json:"exit_code"`
	Content   []byte    `json:"-"`
}

// Logs returns every stored log in upload order.
func (s *Server) Logs() []Log {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Log, 0, len(s.logs))
	for _, l := range s.logs {
		c := *l
		c.Content = slices.Clone(l.Content)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// LogByID returns the log with id.
func (s *Server) LogByID(id int) (Log, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.logs[id]
	if !ok {
		return Log{}, false
	}
	c := *l
	c.Content = slices.Clone(l.Content)
	return c, true
}

// hasLength reports whether the request declared its body length; Go's
// server reports a chunked body as ContentLength -1.
func hasLength(r *http.Request) bool {
	return r.ContentLength >= 0 && !slices.Contains(r.TransferEncoding, "chunked")
}

func (s *Server) handleLogUpload(w http.ResponseWriter, r *http.Request) {
	if !hasLength(r) {
		w.WriteHeader(http.StatusLengthRequired)
		return
	}
	q := r.URL.Query()
	start, err := strconv.ParseInt(q.Get("startTime"), 10, 64)
	if err != nil || start == 0 {
		writeJSON(w, http.StatusBadRequest, "Invalid or missing start time.", "")
		return
	}
	end, err := strconv.ParseInt(q.Get("endTime"), 10, 64)
	if err != nil || end == 0 {
		writeJSON(w, http.StatusBadRequest, "Invalid or missing end time.", "")
		return
	}
	exit, err := strconv.Atoi(q.Get("exitCode"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, "Invalid or missing exit code.", "")
		return
	}
	arch := q.Get("arch")
	if arch == "" {
		writeJSON(w, http.StatusBadRequest, "Missing arch.", "")
		return
	}
	tid, err := strconv.Atoi(q.Get("target"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, "Invalid or missing target.", "")
		return
	}
	s.mu.Lock()
	_, ok := s.targets[tid]
	s.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusBadRequest, "Unknown target.", "")
		return
	}
	if r.ContentLength > maxLogSize {
		writeJSON(w, http.StatusRequestEntityTooLarge, "Log too large.", "")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxLogSize))
	if err != nil || int64(len(body)) != r.ContentLength {
		// The client went away mid-body: nothing is stored.
		writeJSON(w, http.StatusBadRequest, "Incomplete body.", "")
		return
	}
	s.mu.Lock()
	s.nextLID++
	l := &Log{ID: s.nextLID, TargetID: tid, StartTime: time.Unix(start, 0).UTC(),
		EndTime: time.Unix(end, 0).UTC(), Arch: arch, ExitCode: exit, Content: body}
	s.logs[l.ID] = l
	s.mu.Unlock()
	if err := s.saveLog(l); err != nil {
		s.opts.log.WithError(err).Error("saving log")
	}
	writeJSON(w, http.StatusOK, "", l.ID)
}

func (s *Server) saveLog(l *Log) error {
	if s.opts.dataDir == "" {
		return nil
	}
	dir := filepath.Join(s.opts.dataDir, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	meta, err := json.Marshal(l)
	if err != nil {
		return err
	}
	base := filepath.Join(dir, strconv.Itoa(l.ID))
	if err := os.WriteFile(base+".json", meta, 0o644); err != nil {
		return err
	}
	return os.WriteFile(base+".log", l.Content, 0o644)
}

// LogPath returns where the log with id is saved, or "" without a data dir.
func (s *Server) LogPath(id int) string {
	if s.opts.dataDir == "" {
		return ""
	}
	return filepath.Join(s.opts.dataDir, "logs", strconv.Itoa(id)+".log")
}

func (s *Server) handleLogList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, offset := 25, 0
	var err error
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			writeJSON(w, http.StatusBadRequest, "Invalid limit.", "")
			return
		}
	}
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			writeJSON(w, http.StatusBadRequest, "Invalid offset.", "")
			return
		}
	}
	target := -1
	if v := q.Get("target"); v != "" {
		if target, err = strconv.Atoi(v); err != nil {
			writeJSON(w, http.StatusBadRequest, "Invalid target.", "")
			return
		}
	}
	var codes []int
	if v := q.Get("exit_codes"); v != "" {
		for _, f := range strings.Split(v, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				writeJSON(w, http.StatusBadRequest, "Invalid exit codes.", "")
				return
			}
			codes = append(codes, c)
		}
	}
	arch := q.Get("arch")
	var out []Log
	for _, l := range s.Logs() {
		if (target >= 0 && l.TargetID != target) || (arch != "" && l.Arch != arch) ||
			(codes != nil && !slices.Contains(codes, l.ExitCode)) {
			continue
		}
		out = append(out, l)
	}
	out = out[min(offset, len(out)):]
	out = out[:min(limit, len(out))]
	if out == nil {
		out = []Log{}
	}
	writeJSON(w, http.StatusOK, "", out)
}

func (s *Server) logFromPath(w http.ResponseWriter, r *http.Request) (Log, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, "Invalid id.", "")
		return Log{}, false
	}
	l, ok := s.LogByID(id)
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return Log{}, false
	}
	return l, true
}

func (s *Server) handleLogGet(w http.ResponseWriter, r *http.Request) {
	if l, ok := s.logFromPath(w, r); ok {
		writeJSON(w, http.StatusOK, "", l)
	}
}

func (s *Server) handleLogContent(w http.ResponseWriter, r *http.Request) {
	if l, ok := s.logFromPath(w, r); ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(l.Content)))
		_, _ = w.Write(l.Content)
	}
}

func (s *Server) handleLogDelete(w http.ResponseWriter, r *http.Request) {
	l, ok := s.logFromPath(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	delete(s.logs, l.ID)
	s.mu.Unlock()
	if p := s.LogPath(l.ID); p != "" {
		err := errors.Join(os.Remove(p), os.Remove(strings.TrimSuffix(p, ".log")+".json"))
		if err != nil {
			s.opts.log.WithError(err).Warn("removing log")
		}
	}
	writeJSON(w, http.StatusOK, "", "")
}
