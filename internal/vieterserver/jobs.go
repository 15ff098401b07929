package vieterserver

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// AddTarget adds a target and returns its id. Empty BaseImage and a zero
// Timeout get the server defaults.
func (s *Server) AddTarget(t Target) int {
	if t.BaseImage == "" {
		t.BaseImage = defaultBaseImage
	}
	if t.Timeout == 0 {
		t.Timeout = defaultTimeout
	}
	if t.Kind == "" {
		t.Kind = "git"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextTID++
	t.ID = s.nextTID
	t.Arches = append([]string(nil), t.Arches...)
	s.targets[t.ID] = &t
	return t.ID
}

// Target returns the target with id.
func (s *Server) Target(id int) (Target, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[id]
	if !ok {
		return Target{}, false
	}
	return *t, true
}

// Enqueue adds a job for target on arch to the end of the queue.
func (s *Server) Enqueue(targetID int, arch string, force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enqueueLocked(targetID, arch, force)
}

func (s *Server) enqueueLocked(targetID int, arch string, force bool) error {
	t, ok := s.targets[targetID]
	if !ok {
		return fmt.Errorf("target %d: %w", targetID, ErrUnknownTarget)
	}
	s.queue[arch] = append(s.queue[arch], Job{
		TargetID: t.ID, Kind: t.Kind, URL: t.URL, Branch: t.Branch, Path: t.Path,
		Repo: t.Repo, BaseImage: t.BaseImage, Force: force, Timeout: t.Timeout,
	})
	return nil
}

// Queued returns a copy of the jobs waiting for arch.
func (s *Server) Queued(arch string) []Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Job(nil), s.queue[arch]...)
}

func (s *Server) handlePoll(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	arch := q.Get("arch")
	if arch == "" {
		writeJSON(w, http.StatusBadRequest, "Missing arch query arg.", "")
		return
	}
	if !q.Has("max") {
		writeJSON(w, http.StatusBadRequest, "Missing max query arg.", "")
		return
	}
	n, err := strconv.Atoi(q.Get("max"))
	if err != nil || n < 0 {
		writeJSON(w, http.StatusBadRequest, "Invalid max query arg.", "")
		return
	}
	asked := n
	s.mu.Lock()
	jobs := s.queue[arch]
	n = min(n, len(jobs))
	out := append([]Job{}, jobs[:n]...)
	s.queue[arch] = jobs[n:]
	s.polls = append(s.polls, PollRecord{Time: s.opts.now(), Arch: arch, Max: asked, Returned: len(out)})
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, "", out)
}

func (s *Server) handleQueue(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("target") {
		writeJSON(w, http.StatusBadRequest, "Missing target query arg.", "")
		return
	}
	id, err := strconv.Atoi(q.Get("target"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, "Unknown target id.", "")
		return
	}
	arch := q.Get("arch")
	if arch == "" {
		writeJSON(w, http.StatusBadRequest, "Missing arch query arg.", "")
		return
	}
	s.mu.Lock()
	err = s.enqueueLocked(id, arch, q.Has("force"))
	s.mu.Unlock()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, "Unknown target id.", "")
		return
	}
	// Vieter answers a bare status: 200 with an empty body.
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleTargets(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := make([]Target, 0, len(s.targets))
	for _, t := range s.targets {
		out = append(out, *t)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	writeJSON(w, http.StatusOK, "", out)
}

// handleTargetAdd creates a target from query parameters, as Vieter's
// POST /api/v1/targets does: kind, url, branch, path, repo, arch (comma
// separated).
func (s *Server) handleTargetAdd(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	t := Target{Kind: q.Get("kind"), URL: q.Get("url"), Branch: q.Get("branch"), Path: q.Get("path"), Repo: q.Get("repo")}
	if t.Kind != "git" && t.Kind != "url" {
		writeJSON(w, http.StatusBadRequest, "Invalid kind.", "")
		return
	}
	if t.URL == "" || !validName(t.Repo) {
		writeJSON(w, http.StatusBadRequest, "Missing url or repo.", "")
		return
	}
	if a := q.Get("arch"); a != "" {
		t.Arches = strings.Split(a, ",")
	}
	writeJSON(w, http.StatusOK, "", s.AddTarget(t))
}
