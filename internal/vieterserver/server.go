package vieterserver

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Route names, as used by Requests, WithHook and FaultConfig.Routes.
const (
	RouteHealth      = "health"
	RoutePoll        = "jobs.poll"
	RouteQueue       = "jobs.queue"
	RouteTargets     = "targets.list"
	RouteTargetAdd   = "targets.add"
	RouteLogUpload   = "logs.upload"
	RouteLogList     = "logs.list"
	RouteLogGet      = "logs.get"
	RouteLogContent  = "logs.content"
	RouteLogDelete   = "logs.delete"
	RoutePublish     = "repo.publish"
	RouteRepoFile    = "repo.file"
	maxLogSize       = 256 << 20
	maxPackageSize   = 1 << 30
	defaultBaseImage = "archlinux:base-devel"
	defaultTimeout   = 3600
)

// Server is a Vieter-compatible server. Create it with New; it is an
// http.Handler, safe for concurrent use.
type Server struct {
	opts options
	mux  *http.ServeMux

	mu       sync.Mutex
	targets  map[int]*Target
	nextTID  int
	queue    map[string][]Job // per arch, FIFO
	logs     map[int]*Log
	nextLID  int
	repos    map[string]map[string]*archRepo // repo → arch → packages
	counts   map[string]int
	statuses map[string]map[int]int
	polls    []PollRecord
	faults   *faulter
}

// Target is a build target: what to build and where to publish it.
type Target struct {
	ID     int    `json:"id"`
	Kind   string `json:"kind"` // "git" or "url"
	URL    string `json:"url"`
	Branch string `json:"branch"`
	Path   string `json:"path"`
	Repo   string `json:"repo"`
	// Arches lists the architectures the target is built for (informative).
	Arches []string `json:"arches"`
	// BaseImage defaults to archlinux:base-devel, Timeout (seconds) to 3600.
	BaseImage string `json:"base_image"`
	Timeout   int    `json:"timeout"`
}

// Job is a build job as GET /api/v1/jobs/poll returns it (a BuildConfig).
type Job struct {
	TargetID  int    `json:"target_id"`
	Kind      string `json:"kind"`
	URL       string `json:"url"`
	Branch    string `json:"branch"`
	Path      string `json:"path"`
	Repo      string `json:"repo"`
	BaseImage string `json:"base_image"`
	Force     bool   `json:"force"`
	Timeout   int    `json:"timeout"`
}

// PollRecord describes one successful poll request as the server saw it.
type PollRecord struct {
	Time     time.Time
	Arch     string
	Max      int
	Returned int
}

// New returns a server configured by opts.
func New(opts ...Option) (*Server, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("vieterserver: %w", err)
		}
	}
	s := &Server{
		opts:     o,
		targets:  map[int]*Target{},
		queue:    map[string][]Job{},
		logs:     map[int]*Log{},
		repos:    map[string]map[string]*archRepo{},
		counts:   map[string]int{},
		statuses: map[string]map[int]int{},
	}
	if o.faults != nil {
		s.faults = newFaulter(*o.faults)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /health", s.route(RouteHealth, false, s.handleHealth))
	mux.Handle("GET /api/v1/jobs/poll", s.route(RoutePoll, true, s.handlePoll))
	mux.Handle("POST /api/v1/jobs/queue", s.route(RouteQueue, true, s.handleQueue))
	mux.Handle("GET /api/v1/targets", s.route(RouteTargets, true, s.handleTargets))
	mux.Handle("POST /api/v1/targets", s.route(RouteTargetAdd, true, s.handleTargetAdd))
	mux.Handle("POST /api/v1/logs", s.route(RouteLogUpload, true, s.handleLogUpload))
	mux.Handle("GET /api/v1/logs", s.route(RouteLogList, true, s.handleLogList))
	mux.Handle("GET /api/v1/logs/{id}", s.route(RouteLogGet, true, s.handleLogGet))
	mux.Handle("GET /api/v1/logs/{id}/content", s.route(RouteLogContent, true, s.handleLogContent))
	mux.Handle("DELETE /api/v1/logs/{id}", s.route(RouteLogDelete, true, s.handleLogDelete))
	mux.Handle("POST /{repo}/publish", s.route(RoutePublish, true, s.handlePublish))
	mux.Handle("GET /{repo}/{arch}/{file}", s.route(RouteRepoFile, false, s.handleRepoFile))
	s.mux = mux
	return s, nil
}

// ServeHTTP implements http.Handler. A path no route matches gets the
// canned 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		drain(r)
		s.send(w, r, canned(http.StatusNotFound), -1)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// route wraps a handler with counting, the hook, authentication, faults
// and Vieter's framing of the answer (see wire.go).
func (s *Server) route(name string, auth bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.counts[name]++
		s.mu.Unlock()
		if s.opts.hook != nil {
			s.opts.hook(name, r)
		}
		if auth && !s.authorized(r) {
			drain(r)
			s.countStatus(name, http.StatusUnauthorized)
			s.send(w, r, canned(http.StatusUnauthorized), -1)
			return
		}
		var f fault
		if s.faults != nil && s.faults.applies(name) {
			f = s.faults.pick()
		}
		if a, answered := f.before(r); answered {
			if a == nil { // the connection is closed without an answer
				s.countStatus(name, StatusDropped)
				drop(w)
				return
			}
			s.countStatus(name, a.code())
			s.send(w, r, a, -1)
			return
		}
		rec := newRecorder()
		h(rec, r)
		drain(r)
		cut := f.after(rec)
		switch {
		case cut == dropAll:
			s.countStatus(name, StatusDropped)
			drop(w)
		case cut >= 0:
			s.countStatus(name, StatusDropped)
			s.send(w, r, rec, cut)
		default:
			s.countStatus(name, rec.code())
			s.send(w, r, rec, -1)
		}
	})
}

// drop closes the connection without an answer.
func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // HTTP/2: abort the stream
	}
	_ = conn.Close()
}

// send writes a with Vieter's framing, cut after cut body bytes (< 0: whole).
func (s *Server) send(w http.ResponseWriter, r *http.Request, a *recorder, cut int) {
	if !writeRaw(w, r, a, cut) {
		if cut >= 0 {
			panic(http.ErrAbortHandler)
		}
		writeFallback(w, r, a)
	}
}

func (s *Server) authorized(r *http.Request) bool {
	got := r.Header.Get("X-Api-Key")
	return subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.apiKey)) == 1
}

// StatusDropped is the pseudo status code Statuses uses for connections
// closed by fault injection.
const StatusDropped = -1

func (s *Server) countStatus(route string, status int) {
	if status == 0 {
		status = http.StatusOK
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.statuses[route]
	if m == nil {
		m = map[int]int{}
		s.statuses[route] = m
	}
	m[status]++
}

// envelope is the JSON shape of every API answer.
type envelope struct {
	Message string `json:"message"`
	Data    any    `json:"data"`
}

// writeJSON writes a JSON envelope; route sends it without a
// Content-Length, as Vieter does.
func writeJSON(w http.ResponseWriter, status int, message string, data any) {
	if data == nil {
		data = ""
	}
	b, err := json.Marshal(envelope{Message: message, Data: data})
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError) // status only, empty body
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, "Healthy.", "")
}

// Requests returns how many requests reached route (see the Route
// constants), whatever their outcome.
func (s *Server) Requests(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[route]
}

// Statuses returns how many answers of each status code route gave.
// Dropped connections are counted under StatusDropped.
func (s *Server) Statuses(route string) map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]int{}
	for k, v := range s.statuses[route] {
		out[k] = v
	}
	return out
}

// Polls returns the successful poll requests in order.
func (s *Server) Polls() []PollRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]PollRecord(nil), s.polls...)
}

// Routes lists the route names that have had requests, sorted.
func (s *Server) Routes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.counts {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// validName reports whether a repository or arch name is safe to use as a
// path element.
func validName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 255 {
		return false
	}
	return !strings.ContainsAny(s, "/\\\x00") && strings.TrimSpace(s) == s
}
