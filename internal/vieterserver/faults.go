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
	// Fault5xx answers a 5xx without running the handler: the canned 500,
	// a 500 with an empty body, or a proxy's 502 or 503 HTML page.
	Fault5xx Fault = iota
	// FaultDrop closes the connection without an answer and without
	// running the handler.
	FaultDrop
	// FaultMalformedJSON answers 200 with a body that is not the route's
	// answer (truncated JSON) without running the handler: what a proxy
	// or a cut connection can produce, and nothing was stored.
	FaultMalformedJSON
	// FaultLatency delays the request by up to FaultConfig.MaxLatency and
	// then handles it normally.
	FaultLatency
	// FaultDropAfter runs the handler — the request takes effect — and
	// then loses the answer: the connection is closed after the headers
	// and half the body, or before any byte.
	FaultDropAfter
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
	case FaultDropAfter:
		return "drop-after"
	}
	return "unknown"
}

// FaultConfig configures fault injection. Every fault but FaultDropAfter
// is injected before the request takes effect: such a failed request never
// changed the server's state. FaultDropAfter is the one that did.
type FaultConfig struct {
	// Rate is the fraction of requests that get a fault, in [0,1].
	Rate float64
	// Seed makes the choice of requests and faults deterministic for a
	// given order of requests.
	Seed uint64
	// Kinds are chosen uniformly (list a kind twice to weigh it double);
	// default 5xx, drop and malformed JSON.
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

// fault is the fault chosen for one request, if any.
type fault struct {
	on     bool
	kind   Fault
	x      float64 // a random number the fault may use
	maxLat time.Duration
}

// pick decides whether this request gets a fault, and which.
func (f *faulter) pick() fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rng.Float64() >= f.cfg.Rate {
		return fault{}
	}
	k := f.cfg.Kinds[f.rng.IntN(len(f.cfg.Kinds))]
	f.hits[k]++
	return fault{on: true, kind: k, x: f.rng.Float64(), maxLat: f.cfg.MaxLatency}
}

// before applies the faults that come before the handler. answered says
// that the request ends here: with the answer a, or without an answer when
// a is nil.
func (f fault) before(r *http.Request) (a *recorder, answered bool) {
	if !f.on {
		return nil, false
	}
	switch f.kind {
	case Fault5xx:
		drain(r)
		switch int(f.x * 4) {
		case 0:
			return canned(http.StatusInternalServerError), true
		case 1:
			a = newRecorder()
			a.status = http.StatusInternalServerError
			return a, true
		default:
			a = newRecorder()
			a.status = http.StatusBadGateway
			if f.x >= 0.75 {
				a.status = http.StatusServiceUnavailable
			}
			a.header.Set("Content-Type", "text/html")
			a.body.WriteString("<html><body><h1>" + http.StatusText(a.status) + "</h1>injected fault</body></html>\n")
			return a, true
		}
	case FaultDrop:
		drain(r)
		return nil, true
	case FaultMalformedJSON:
		drain(r)
		a = newRecorder()
		a.header.Set("Content-Type", "application/json")
		a.status = http.StatusOK
		a.body.WriteString(`{"message": "", "data": [{"target_id": `)
		return a, true
	case FaultLatency:
		t := time.NewTimer(time.Duration(f.x * float64(f.maxLat)))
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
	}
	return nil, false
}

// dropAll is the cut of an answer lost before its first byte.
const dropAll = -2

// after returns where to cut the handler's answer: -1 not at all, dropAll
// before any byte, n ≥ 0 after the headers and n body bytes.
func (f fault) after(a *recorder) int {
	if !f.on || f.kind != FaultDropAfter {
		return -1
	}
	if f.x < 0.5 {
		return dropAll
	}
	return a.body.Len() / 2
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
