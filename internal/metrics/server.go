package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/vieter-v/vagent/poll"
)

// Option configures the handler.
type Option func(*options) error

type options struct {
	dataDir string
	margin  time.Duration
	now     func() time.Time
	log     logrus.FieldLogger
}

// WithDataDir sets the directory /readyz checks is writable. Default:
// none (not checked).
func WithDataDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("empty data dir")
		}
		o.dataDir = dir
		return nil
	}
}

// WithReadyMargin sets the margin added to twice the poll interval within
// which the last poll must have succeeded for /readyz. Default 10s.
func WithReadyMargin(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("negative margin %v", d)
		}
		o.margin = d
		return nil
	}
}

// WithLogger sets the logger. Default (and for nil): silent.
func WithLogger(l logrus.FieldLogger) Option {
	return func(o *options) error {
		if l == nil {
			l = silentLogger()
		}
		o.log = l
		return nil
	}
}

// silentLogger is the logger of a caller that sets none, or sets nil.
func silentLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// Handler serves /metrics, /healthz, /readyz and /status for the agent
// src, whose metrics are m, and, with WithDataDir, the build logs of its
// spool: /logs/slot/N and /logs/target/ID (?follow=true follows a running
// build).
func Handler(m *Metrics, src StatusSource, opts ...Option) (http.Handler, error) {
	o := options{margin: 10 * time.Second, now: time.Now, log: silentLogger()}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	if m == nil || src == nil {
		return nil, errors.New("metrics: nil metrics or status source")
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: logAdapter{o.log}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rep := Ready(src.Status(), o.now(), o.margin, o.dataDir)
		code := http.StatusOK
		if !rep.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, rep)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, NewStatusJSON(src.Status()))
	})
	logs := func(w http.ResponseWriter, r *http.Request, sel poll.LogSelector) {
		serveLog(w, r, o.dataDir, sel)
	}
	mux.HandleFunc("GET /logs/slot/{slot}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("slot"))
		if err != nil || n < 0 {
			http.Error(w, "want /logs/slot/N, a slot number", http.StatusBadRequest)
			return
		}
		logs(w, r, poll.LogSelector{Slot: n})
	})
	mux.HandleFunc("GET /logs/target/{target}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("target"))
		if err != nil || n <= 0 {
			http.Error(w, "want /logs/target/ID, a target id", http.StatusBadRequest)
			return
		}
		logs(w, r, poll.LogSelector{Slot: -1, Target: n})
	})
	return mux, nil
}

// serveLog writes a build log of the spool of dataDir (poll.FollowLog),
// following it with ?follow=true; every write is flushed, so the client
// sees the build's lines as they come.
func serveLog(w http.ResponseWriter, r *http.Request, dataDir string, sel poll.LogSelector) {
	if dataDir == "" {
		http.Error(w, "this agent serves no logs (no data dir)", http.StatusNotFound)
		return
	}
	follow := false
	if v := r.URL.Query().Get("follow"); v != "" {
		var err error
		if follow, err = strconv.ParseBool(v); err != nil {
			http.Error(w, "follow: want true or false", http.StatusBadRequest)
			return
		}
	}
	fw := &flushWriter{w: w}
	err := poll.FollowLog(r.Context(), dataDir, sel, follow, fw)
	switch {
	case err == nil:
	case !fw.wrote && errors.Is(err, poll.ErrNoLog):
		http.Error(w, err.Error()+" (an uploaded log is on the server)", http.StatusNotFound)
	case !fw.wrote:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// flushWriter sends every write to the client at once.
type flushWriter struct {
	w     http.ResponseWriter
	wrote bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	if !f.wrote {
		f.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		f.w.Header().Set("Cache-Control", "no-store")
		f.w.Header().Set("X-Content-Type-Options", "nosniff")
		f.wrote = true
	}
	n, err := f.w.Write(p)
	if err == nil {
		err = http.NewResponseController(f.w).Flush()
	}
	return n, err
}

type logAdapter struct{ l logrus.FieldLogger }

func (a logAdapter) Println(v ...any) { a.l.Warn(v...) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// StatusJSON is the body of /status: the agent's status with durations
// written as Go duration strings ("30s"), not nanoseconds. `vagent
// status` reads it back with Decode.
type StatusJSON struct {
	poll.Status
	PollInterval string `json:"poll_interval"` // shadows Status.PollInterval
}

// NewStatusJSON returns the /status body of st.
func NewStatusJSON(st poll.Status) StatusJSON {
	return StatusJSON{Status: st, PollInterval: st.PollInterval.String()}
}

// Decode returns the status the body describes.
func (s StatusJSON) Decode() (poll.Status, error) {
	st := s.Status
	if s.PollInterval != "" {
		d, err := time.ParseDuration(s.PollInterval)
		if err != nil {
			return st, fmt.Errorf("poll_interval: %w", err)
		}
		st.PollInterval = d
	}
	return st, nil
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready  bool             `json:"ready"`
	Checks map[string]Check `json:"checks"`
}

// Check is one readiness check.
type Check struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Ready decides readiness at now: the last poll succeeded within twice the
// poll interval plus margin (or every slot is busy, so the agent does not
// poll, and its last poll succeeded), the agent is not stopping, and
// dataDir (if not empty) is writable.
func Ready(st poll.Status, now time.Time, margin time.Duration, dataDir string) Readiness {
	rep := Readiness{Ready: true, Checks: map[string]Check{}}
	set := func(name string, ok bool, detail string) {
		rep.Checks[name] = Check{OK: ok, Detail: detail}
		rep.Ready = rep.Ready && ok
	}
	window := 2*st.PollInterval + margin
	free := 0
	for _, s := range st.Slots {
		if s.State == "empty" {
			free++
		}
	}
	switch {
	case st.Stopping:
		set("poll", false, "the agent is stopping")
	case st.LastPollOK.IsZero():
		set("poll", false, "no successful poll yet"+lastError(st))
	case now.Sub(st.LastPollOK) <= window:
		set("poll", true, "")
	case free == 0 && st.LastPollError == "":
		set("poll", true, "every slot is busy")
	default:
		set("poll", false, fmt.Sprintf("last successful poll %v ago (limit %v)%s", now.Sub(st.LastPollOK).Round(time.Second), window, lastError(st)))
	}
	if dataDir != "" {
		if err := writable(dataDir); err != nil {
			set("data_dir", false, err.Error())
		} else {
			set("data_dir", true, "")
		}
	}
	return rep
}

func lastError(st poll.Status) string {
	if st.LastPollError == "" {
		return ""
	}
	return "; last error: " + st.LastPollError
}

// writable creates and removes a file in dir.
func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".readyz-*")
	if err != nil {
		return fmt.Errorf("data dir not writable: %w", err)
	}
	name := f.Name()
	_, err = f.Write([]byte("ok"))
	return errors.Join(err, f.Close(), os.Remove(name))
}

// Serve serves h on ln until ctx is done, then shuts the server down.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	// Requests outlive ctx (the agent's polling) but not the server: a
	// followed log (/logs/…?follow=true) ends when the server shuts down.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context {
		return base
	}}
	srv.RegisterOnShutdown(cancel)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
