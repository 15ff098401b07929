package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vieter-v/vagent/oci"
)

// pullProgress shows a pull's progress: on a terminal one line per layer
// (state, bytes, rate, ETA) redrawn in place, with log lines printed above
// the bars, never inside one; otherwise a log line per layer event.
type pullProgress struct {
	env *cliEnv
	tty bool
	now func() time.Time
	mu  sync.Mutex

	layers map[int]*layerBar
	count  int
	last   time.Time // last redraw
	lines  int       // bar lines on screen below the cursor's line start
	logOut io.Writer // the logger's output before the pull
	// resolved: the registry answered (the reference was resolved).
	resolved bool
	finished bool
}

// layerBar is the state of one layer.
type layerBar struct {
	blob        v1.Hash
	state       string
	done, total int64
	start       time.Time
}

func newPullProgress(env *cliEnv) *pullProgress {
	p := &pullProgress{env: env, tty: isTerminal(env.stderr), now: time.Now, layers: map[int]*layerBar{}}
	if p.tty {
		// Log lines go through the bars (see Write).
		p.logOut = env.log.Out
		env.log.SetOutput(p)
	}
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// checked tells whether the pull of ref asked its source: a registry
// answered, or ref cannot change (a digest, a local layout or archive).
func (p *pullProgress) checked(ref string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, err := oci.ParseReference(ref)
	if err != nil || r.Transport != oci.TransportRegistry {
		return true
	}
	if _, ok := r.Name.(interface{ DigestStr() string }); ok {
		return true
	}
	return p.resolved
}

func (p *pullProgress) update(u oci.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return
	}
	if u.Count > 0 {
		p.count = u.Count
	}
	if u.Phase == oci.PhaseResolve {
		p.resolved = true
	}
	if u.Index >= 0 && u.Phase != oci.PhaseResolve && u.Phase != oci.PhaseDone {
		l := p.layers[u.Index]
		if l == nil {
			l = &layerBar{blob: u.Blob, start: p.now()}
			p.layers[u.Index] = l
		}
		l.state = string(u.Phase)
		switch u.Phase {
		case oci.PhaseDownload, oci.PhaseCached, oci.PhaseVerified:
			l.done, l.total = u.Done, u.Total
		case oci.PhaseExtract:
			l.state = "unpacking"
		case oci.PhaseApplied:
			l.state = "unpacked"
		}
		if u.Phase == oci.PhaseDownload {
			l.state = "downloading"
		}
	}
	if !p.tty {
		log := p.env.log.WithField("image", u.Ref)
		// The store logs the resolution itself, with the endpoint that
		// served it.
		switch u.Phase {
		case oci.PhaseCached:
			log.Infof("layer %d/%d %s: cached", u.Index+1, u.Count, shortHash(u.Blob))
		case oci.PhaseVerified:
			log.Infof("layer %d/%d %s: downloaded %s", u.Index+1, u.Count, shortHash(u.Blob), humanBytes(u.Total))
		case oci.PhaseApplied:
			log.Infof("layer %d/%d %s: unpacked", u.Index+1, u.Count, shortHash(u.Blob))
		case oci.PhaseDone:
			log.Info("rootfs ready")
		}
		return
	}
	// Byte counts redraw at most every 100ms; state changes at once.
	if (u.Phase == oci.PhaseDownload || u.Phase == oci.PhaseExtract) && p.now().Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.redraw()
}

// redraw replaces the bars on screen. The caller holds p.mu.
func (p *pullProgress) redraw() {
	p.last = p.now()
	var b strings.Builder
	p.clear(&b)
	idx := make([]int, 0, len(p.layers))
	for i := range p.layers {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		b.WriteString(p.bar(i, p.layers[i]))
		b.WriteString("\n")
	}
	p.lines = len(idx)
	fmt.Fprint(p.env.stderr, b.String())
}

// clear moves up over the bars and erases them. The caller holds p.mu.
func (p *pullProgress) clear(b *strings.Builder) {
	if p.lines > 0 {
		fmt.Fprintf(b, "\033[%dA", p.lines)
	}
	b.WriteString("\r\033[J")
}

// bar is the line of layer i: position, digest, state, bytes, rate, ETA.
func (p *pullProgress) bar(i int, l *layerBar) string {
	line := fmt.Sprintf("layer %d/%d %s  %-11s", i+1, max(p.count, i+1), shortHash(l.blob), l.state)
	if l.total > 0 {
		line += fmt.Sprintf(" %9s / %-9s", humanBytes(l.done), humanBytes(l.total))
		if l.state == "downloading" {
			if secs := p.now().Sub(l.start).Seconds(); secs > 0 && l.done > 0 {
				rate := float64(l.done) / secs
				eta := time.Duration(float64(l.total-l.done) / rate * float64(time.Second)).Round(time.Second)
				line += fmt.Sprintf("  %s/s  ETA %s", humanBytes(int64(rate)), eta)
			}
		}
	}
	return strings.TrimRight(line, " ")
}

// Write prints a log line above the bars: they are erased, the line
// written, and they are drawn again below it.
func (p *pullProgress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s strings.Builder
	p.clear(&s)
	s.Write(b)
	if _, err := io.WriteString(p.env.stderr, s.String()); err != nil {
		return 0, err
	}
	p.lines = 0
	if len(p.layers) > 0 {
		p.redraw()
	}
	return len(b), nil
}

// finish leaves the last state of the bars on screen and gives the log
// its output back.
func (p *pullProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && !p.finished {
		p.finished = true
		if len(p.layers) > 0 {
			p.redraw()
		}
		p.lines = 0
		p.env.log.SetOutput(p.logOut)
	}
}

// terminalPullProgress shows the pulls of a command that does more than
// pull (vagent build) on a terminal only, and only until the first image
// is ready: the bars would otherwise mix with the build's output. It
// returns the option to give the store (none without a terminal) and a
// function that ends the display.
func terminalPullProgress(env *cliEnv) ([]oci.Option, func()) {
	if !isTerminal(env.stderr) {
		return nil, func() {}
	}
	p := newPullProgress(env)
	return []oci.Option{oci.WithProgress(func(u oci.Progress) {
		p.update(u)
		if u.Phase == oci.PhaseDone {
			p.finish()
		}
	})}, p.finish
}
