package vieterserver

import (
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Fault is a kind of injected failure.
type Fault int

const (
	// Fault5xx answers 500, 502 or 503 with a non-JSON body.
	Fault5xx Fault = iota
	// FaultDrop closes the connection without an answer.
	FaultDrop
	// FaultMalformedJSON answers 200 with a truncated JSON body.
	FaultMalformedJSON
	// FaultLatency delays the request by up to FaultConfig.MaxLatency and
	// then handles it normally.
	FaultLatency
)

func (f Fault) String() string {
	switch f {
	case Fault5xx:
		return "5xx"
	case FaultDrop:
		return "drop"
	case FaultMalformedJSON:
		return "malformed-json"
	case FaultLatency:
		return "latency"
	}
	return "unknown"
}

// FaultConfig configures fault injection. A fault is injected before the
// request takes effect: a failed request never changed the server's state,
// so a client that retries cannot create duplicates.
type FaultConfig struct {
	// Rate is the fraction of requests that get a fault, in [0,1].
	Rate float64
	// Seed makes the choice of requests and faults deterministic for a
	// given order of requests.
	Seed uint64
	// Kinds are chosen uniformly; default 5xx, drop and malformed JSON.
	Kinds []Fault
	// Routes limits faults to these routes; default every route but health.
	Routes []string
	// MaxLatency bounds FaultLatency; default 50ms.
	MaxLatency time.Duration
}

type faulter struct {
	cfg  FaultConfig
	mu   sync.Mutex
	rng  *rand.Rand
	hits map[Fault]int
}

func newFaulter(cfg FaultConfig) *faulter {
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = []Fault{Fault5xx, FaultDrop, FaultMalformedJSON}
	}
	if cfg.MaxLatency <= 0 {
		cfg.MaxLatency = 50 * time.Millisecond
	}
	return &faulter{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)), hits: map[Fault]int{}}
}

func (f *faulter) applies(route string) bool {
	if len(f.cfg.Routes) == 0 {
		return route != RouteHealth
	}
	return slices.Contains(f.cfg.Routes, route)
}

// pick decides whether this request gets a fault, and which, with the
// extra random number a fault may need.
func (f *faulter) pick() (Fault, float64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rng.Float64() >= f.cfg.Rate {
		return 0, 0, false
	}
	k := f.cfg.Kinds[f.rng.IntN(len(f.cfg.Kinds))]
	f.hits[k]++
	return k, f.rng.Float64(), true
}

// inject applies a fault, reporting whether the request was answered.
func (f *faulter) inject(w *statusWriter, r *http.Request) bool {
	kind, x, ok := f.pick()
	if !ok {
		return false
	}
	switch kind {
	case Fault5xx:
		codes := []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(codes[int(x*float64(len(codes)))%len(codes)])
		_, _ = w.Write([]byte("<html><body>injected fault</body></html>\n"))
		return true
	case FaultDrop:
		rc := http.NewResponseController(w)
		conn, _, err := rc.Hijack()
		if err != nil {
			// Not hijackable (HTTP/2): abort the handler instead.
			w.status = StatusDropped
			panic(http.ErrAbortHandler)
		}
		w.status = StatusDropped
		_ = conn.Close()
		return true
	case FaultMalformedJSON:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"message": "", "data": [{"target_id": `))
		return true
	case FaultLatency:
		t := time.NewTimer(time.Duration(x * float64(f.cfg.MaxLatency)))
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
	}
	return false
}

// Faults returns how many faults of each kind were injected.
func (s *Server) Faults() map[Fault]int {
	out := map[Fault]int{}
	if s.faults == nil {
		return out
	}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	for k, v := range s.faults.hits {
		out[k] = v
	}
	return out
}
