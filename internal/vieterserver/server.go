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

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// route wraps a handler with counting, the hook, authentication and faults.
func (s *Server) route(name string, auth bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.counts[name]++
		s.mu.Unlock()
		if s.opts.hook != nil {
			s.opts.hook(name, r)
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() { s.countStatus(name, sw.status) }()
		if auth && !s.authorized(r) {
			// The real server's 401 has no body to rely on.
			sw.WriteHeader(http.StatusUnauthorized)
			return
		}
		if s.faults != nil && s.faults.applies(name) {
			if s.faults.inject(sw, r) {
				return
			}
		}
		h(sw, r)
	})
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

// statusWriter records the status code; it keeps Hijack available.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// envelope is the JSON shape of every API answer.
type envelope struct {
	Message string `json:"message"`
	Data    any    `json:"data"`
}

func writeJSON(w http.ResponseWriter, status int, message string, data any) {
	if data == nil {
		data = ""
	}
	b, err := json.Marshal(envelope{Message: message, Data: data})
	if err != nil {
		http.Error(w, "", http.StatusInternalServerError)
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
