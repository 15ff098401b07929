package metrics

import (
	"errors"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vieter-v/vagent/oci"
	"github.com/vieter-v/vagent/poll"
)

// StatusSource is a running agent (poll.Agent).
type StatusSource interface {
	Status() poll.Status
}

// ImageObserver is what builder-image code reports. Metrics implements
// it; builder and oci code call it through the CLI's wiring.
type ImageObserver interface {
	// ImagePrepared reports one builder image preparation and its
	// duration; err is nil when it succeeded.
	ImagePrepared(d time.Duration, err error)
	// BytesPulled and BytesUnpacked count image bytes downloaded and
	// applied to a rootfs.
	BytesPulled(n int64)
	BytesUnpacked(n int64)
}

// Metrics holds the agent's collectors in a private registry. Create it
// with New. Its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	builds        *prometheus.CounterVec
	buildDuration *prometheus.HistogramVec
	polls         prometheus.Counter
	pollErrors    *prometheus.CounterVec
	jobs          prometheus.Counter
	uploads       *prometheus.CounterVec
	preparations  *prometheus.CounterVec
	prepDuration  prometheus.Histogram
	pulled        prometheus.Counter
	unpacked      prometheus.Counter
	published     *prometheus.CounterVec
}

var (
	_ poll.Observer = (*Metrics)(nil)
	_ ImageObserver = (*Metrics)(nil)
)

// The label values that exist from the start, so that dashboards see
// zeros rather than missing series.
var (
	results    = []poll.Result{poll.ResultSuccess, poll.ResultFailure, poll.ResultSkipped, poll.ResultTimeout, poll.ResultCancelled, poll.ResultSetupError, poll.ResultInterrupted}
	errorKinds = []string{"unauthorized", "http_4xx", "http_5xx", "malformed", "timeout", "network", "other"}
)

// New returns metrics with the Go and process collectors.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.builds = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vagent_builds_total",
		Help: "Builds finished, by result."}, []string{"result"})
	m.buildDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vagent_build_duration_seconds",
		Help:    "Duration of finished builds, by result.",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400}}, []string{"result"})
	m.polls = prometheus.NewCounter(prometheus.CounterOpts{Name: "vagent_polls_total", Help: "Poll requests made."})
	m.pollErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vagent_poll_errors_total",
		Help: "Poll requests that failed, by kind."}, []string{"kind"})
	m.jobs = prometheus.NewCounter(prometheus.CounterOpts{Name: "vagent_jobs_received_total", Help: "Jobs received from polls."})
	m.uploads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vagent_log_uploads_total",
		Help: "Log upload attempts: accepted, failed (retried) or rejected (refused for good)."}, []string{"result"})
	m.preparations = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vagent_builder_image_preparations_total",
		Help: "Builder image preparations, by result."}, []string{"result"})
	m.prepDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vagent_builder_image_preparation_duration_seconds",
		Help: "Duration of builder image preparations.", Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600}})
	m.pulled = prometheus.NewCounter(prometheus.CounterOpts{Name: "vagent_image_pulled_bytes_total", Help: "Compressed image bytes downloaded."})
	m.unpacked = prometheus.NewCounter(prometheus.CounterOpts{Name: "vagent_image_unpacked_bytes_total", Help: "Compressed image bytes applied to a rootfs."})
	m.published = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vagent_packages_published_total",
		Help: "Packages published, by how the server confirmed them: answer (the publish answer named the package), check (the repository had it after an answer that proved nothing) or failed (not confirmed: the build failed)."}, []string{"confirmed"})
	m.reg.MustRegister(m.builds, m.buildDuration, m.polls, m.pollErrors, m.jobs, m.uploads, m.preparations, m.prepDuration,
		m.pulled, m.unpacked, m.published, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range results {
		m.builds.WithLabelValues(string(r))
		m.buildDuration.WithLabelValues(string(r))
	}
	for _, k := range errorKinds {
		m.pollErrors.WithLabelValues(k)
	}
	for _, r := range []string{"accepted", "failed", "rejected"} {
		m.uploads.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.preparations.WithLabelValues(r)
	}
	for _, c := range []string{"answer", "check", "failed"} {
		m.published.WithLabelValues(c)
	}
	return m
}

// SetBuildInfo exports vagent_build_info{version,commit,go,agent} = 1, the
// build's version and commit, the Go version it was built with and the
// agent's name (agent_name).
func (m *Metrics) SetBuildInfo(version, commit, agent string) error {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vagent_build_info",
		Help: "The running vagent: always 1, with its version, commit, Go version and agent name as labels."}, []string{"version", "commit", "go", "agent"})
	g.WithLabelValues(version, commit, runtime.Version(), agent).Set(1)
	return m.reg.Register(g)
}

// Registry returns the private registry, to register more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Polled implements poll.Observer.
func (m *Metrics) Polled(jobs int, err error) {
	m.polls.Inc()
	if err != nil {
		m.pollErrors.WithLabelValues(poll.ErrorKind(err)).Inc()
		return
	}
	m.jobs.Add(float64(jobs))
}

// BuildFinished implements poll.Observer.
func (m *Metrics) BuildFinished(r poll.Result, d time.Duration) {
	m.builds.WithLabelValues(string(r)).Inc()
	m.buildDuration.WithLabelValues(string(r)).Observe(d.Seconds())
}

// Uploaded implements poll.Observer.
func (m *Metrics) Uploaded(err error, final bool) {
	switch {
	case err == nil:
		m.uploads.WithLabelValues("accepted").Inc()
	case final:
		m.uploads.WithLabelValues("rejected").Inc()
	default:
		m.uploads.WithLabelValues("failed").Inc()
	}
}

// PackagePublished counts one published package by how the server
// confirmed it: "answer", "check", or "" when it could not be confirmed
// (job.WithPublishObserver).
func (m *Metrics) PackagePublished(confirmedBy string) {
	if confirmedBy == "" {
		confirmedBy = "failed"
	}
	m.published.WithLabelValues(confirmedBy).Inc()
}

// ImagePrepared implements ImageObserver.
func (m *Metrics) ImagePrepared(d time.Duration, err error) {
	r := "success"
	if err != nil {
		r = "failure"
	}
	m.preparations.WithLabelValues(r).Inc()
	m.prepDuration.Observe(d.Seconds())
}

// BytesPulled implements ImageObserver.
func (m *Metrics) BytesPulled(n int64) { m.pulled.Add(float64(max(n, 0))) }

// BytesUnpacked implements ImageObserver.
func (m *Metrics) BytesUnpacked(n int64) { m.unpacked.Add(float64(max(n, 0))) }

// OCIProgress counts the bytes of an oci pull or unpack: pass it to
// oci.WithProgress and oci.WithUnpackProgress. Blobs found in the store
// are not counted as pulled.
func (m *Metrics) OCIProgress(p oci.Progress) {
	switch p.Phase {
	case oci.PhaseVerified:
		m.BytesPulled(p.Total)
	case oci.PhaseApplied:
		m.BytesUnpacked(p.Total)
	}
}

// WatchAgent adds the gauges read from the agent at each scrape: slots by
// state, logs pending upload and the time of the last successful poll.
func (m *Metrics) WatchAgent(src StatusSource) error {
	return m.reg.Register(&agentCollector{src: src})
}

// WatchImages adds the builder image gauges, read at each scrape from
// images: how many builder images exist and when the oldest was made.
func (m *Metrics) WatchImages(images func() (count int, oldest time.Time, err error)) error {
	if images == nil {
		return errors.New("nil image source")
	}
	return m.reg.Register(&imageCollector{images: images})
}

var (
	slotsDesc   = prometheus.NewDesc("vagent_slots", "Build slots by state.", []string{"state"}, nil)
	pendingDesc = prometheus.NewDesc("vagent_log_uploads_pending", "Finished builds whose log the server has not accepted yet.", nil, nil)
	lastOKDesc  = prometheus.NewDesc("vagent_last_poll_success_timestamp_seconds", "Time of the last successful poll.", nil, nil)
	imagesDesc  = prometheus.NewDesc("vagent_builder_images", "Builder images on disk.", nil, nil)
	ageDesc     = prometheus.NewDesc("vagent_builder_image_oldest_age_seconds", "Age of the oldest builder image.", nil, nil)
)

type agentCollector struct{ src StatusSource }

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- slotsDesc
	ch <- pendingDesc
	ch <- lastOKDesc
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Status()
	counts := map[string]int{"empty": 0, "running": 0, "done": 0}
	for _, s := range st.Slots {
		counts[s.State]++
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(slotsDesc, prometheus.GaugeValue, float64(n), state)
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(st.PendingLogs))
	var ts float64
	if !st.LastPollOK.IsZero() {
		ts = float64(st.LastPollOK.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(lastOKDesc, prometheus.GaugeValue, ts)
}

type imageCollector struct {
	images func() (int, time.Time, error)
}

func (c *imageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- imagesDesc
	ch <- ageDesc
}

func (c *imageCollector) Collect(ch chan<- prometheus.Metric) {
	n, oldest, err := c.images()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(imagesDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(imagesDesc, prometheus.GaugeValue, float64(n))
	var age float64
	if n > 0 && !oldest.IsZero() {
		age = time.Since(oldest).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, age)
}
