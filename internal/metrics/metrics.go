// Package metrics holds the service's Prometheus metrics, served at
// /metrics on the admin listener. The request path feeds them as an
// extproc.Observer; the reloads, the Envoy doctor and the listeners' TLS
// feed theirs; hosts, sessions, discovery, the load signal and the shared
// store are read when Prometheus scrapes. Labels stay bounded: pools and
// hosts come from the configuration, outcomes and reasons are fixed sets;
// no session id or cookie is ever a label. The names are pinned by a golden file
// (testdata/metrics.golden).
package metrics

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
	"github.com/envoy-affinity/envoy-affinity/extproc"
	"github.com/envoy-affinity/envoy-affinity/internal/poolstate"
)

const namespace = "envoy_affinity"

// Engine is what a scrape reads from the decision engine.
type Engine interface {
	Snapshot() *affinity.Snapshot
	ActiveSessions(pool string, now time.Time) map[string]int
	PassiveHoldsRefused() uint64
	HostLoad(pool string) (map[string]float64, time.Time, bool)
	LoadFresh(pool string, now time.Time) bool
}

// Discovery reports how each pool's discovery goes (false: the pool has
// none).
type Discovery interface {
	Status(pool string) (poolstate.Discovery, bool)
}

// Certificate is a listener's TLS as its metrics report it.
type Certificate interface {
	// Listener names the listener ("gRPC", "admin"); the label is its
	// lower case.
	Listener() string
	NotAfter() time.Time
	Reloads() uint64
	Refused() uint64
}

// Metrics are the service's metrics.
type Metrics struct {
	reg         *prometheus.Registry
	decisions   *prometheus.CounterVec
	latency     prometheus.Histogram
	streams     prometheus.Gauge
	reloads     prometheus.Counter
	reloadFails prometheus.Counter
	// envoyProblems and envoyExams report the doctor's examinations of the
	// co-located Envoy (pools[].discovery.envoy).
	envoyProblems *prometheus.GaugeVec
	envoyExams    *prometheus.CounterVec
}

// The request path feeds the metrics.
var _ extproc.Observer = (*Metrics)(nil)

// New registers the metrics of engine, discovery and the load readers
// (nil: none run), of the shared store when there is one (nil: none) and of
// the listeners' certificates.
func New(engine Engine, discovery Discovery, loads LoadReads, shared *redisstore.Store, certs ...Certificate) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "decisions_total",
			Help: "Decisions by pool, outcome (pinned, new, rebound, rejected, pass-through) and reason.",
		}, []string{"pool", "outcome", "reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "decision_duration_seconds",
			Help:    "Server-side time from a request-headers message's arrival to its answer.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3},
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "streams_open", Help: "ext_proc streams open now.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "config", Name: "reloads_total", Help: "Configurations put in force by a reload.",
		}),
		reloadFails: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "config", Name: "reload_errors_total", Help: "Reloads refused (the previous configuration stayed).",
		}),
		envoyProblems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "envoy_config", Name: "problems",
			Help: "Problems the last check of Envoy's configuration found, by severity (error: sessions break; warning: they hold at a cost). See /debug/doctor.",
		}, []string{"severity"}),
		envoyExams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "envoy_config", Name: "checks_total",
			Help: "Checks of Envoy's configuration by result: checked, or unreachable (Envoy's admin API did not answer).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.decisions, m.latency, m.streams, m.reloads, m.reloadFails, m.envoyProblems, m.envoyExams,
		&stateCollector{engine: engine, discovery: discovery}, &loadCollector{engine: engine, reads: loads},
		// go_goroutines, go_memstats_*, process_resident_memory_bytes and
		// the rest of the runtime's and the process's own figures.
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if len(certs) > 0 {
		m.reg.MustRegister(&tlsCollector{certs: certs})
	}
	if shared != nil {
		m.reg.MustRegister(&storeCollector{store: shared})
	}
	return m
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// StreamOpened implements extproc.Observer.
func (m *Metrics) StreamOpened() { m.streams.Inc() }

// StreamClosed implements extproc.Observer.
func (m *Metrics) StreamClosed() { m.streams.Dec() }

// Decided implements extproc.Observer.
func (m *Metrics) Decided(d affinity.Decision, took time.Duration) {
	m.decisions.WithLabelValues(d.Pool, d.Outcome.String(), d.ReasonLabel()).Inc()
	m.latency.Observe(took.Seconds())
}

// Rebound implements extproc.Observer.
func (m *Metrics) Rebound(pool string, reason affinity.Reason) {
	m.decisions.WithLabelValues(pool, affinity.OutcomeRebound.String(), reason.String()).Inc()
}

// ConfigReloaded counts a configuration a reload put in force.
func (m *Metrics) ConfigReloaded() { m.reloads.Inc() }

// ConfigRefused counts a reload refused.
func (m *Metrics) ConfigRefused() { m.reloadFails.Inc() }

// EnvoyExamined records the doctor's report of Envoy's configuration
// (envoydoctor.Observer).
func (m *Metrics) EnvoyExamined(r *doctor.Report) {
	m.envoyExams.WithLabelValues("checked").Inc()
	for _, s := range doctor.Severities() {
		m.envoyProblems.WithLabelValues(string(s)).Set(float64(r.Count(s)))
	}
}

// EnvoyUnreachable counts an examination Envoy's admin API did not answer
// (envoydoctor.Observer).
func (m *Metrics) EnvoyUnreachable() { m.envoyExams.WithLabelValues("unreachable").Inc() }

// stateCollector reads hosts, their state and active sessions, and the
// discoveries' counters when Prometheus scrapes, so none of it costs
// anything on the request path.
type stateCollector struct {
	engine    Engine
	discovery Discovery
}

var (
	hostActiveDesc = prometheus.NewDesc(namespace+"_host_active_sessions",
		"Active sessions per host (bounded loads count them; 0 when bounded loads are off).", []string{"pool", "host"}, nil)
	hostStateDesc = prometheus.NewDesc(namespace+"_host_state",
		"1 for each host's state: active, draining, or down (held down by the service's health checks).", []string{"pool", "host", "state"}, nil)
	discoveryRefreshDesc = prometheus.NewDesc(namespace+"_discovery_refreshes_total",
		"Good reads of a pool's host source.", []string{"pool", "source"}, nil)
	discoveryErrorDesc = prometheus.NewDesc(namespace+"_discovery_errors_total",
		"Failed or empty reads of a pool's host source (the last good hosts stayed).", []string{"pool", "source"}, nil)
	passiveRefusedDesc = prometheus.NewDesc(namespace+"_passive_holds_refused_total",
		"Passive health holds refused because the pool already had health.passive.max_down_percent of its hosts held down.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hostActiveDesc
	ch <- hostStateDesc
	ch <- discoveryRefreshDesc
	ch <- discoveryErrorDesc
	ch <- passiveRefusedDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	ch <- prometheus.MustNewConstMetric(passiveRefusedDesc, prometheus.CounterValue, float64(c.engine.PassiveHoldsRefused()))
	for _, p := range c.engine.Snapshot().Pools {
		load := c.engine.ActiveSessions(p.Name, now)
		for _, h := range poolstate.Hosts(p) {
			ch <- prometheus.MustNewConstMetric(hostActiveDesc, prometheus.GaugeValue, float64(load[h.ID]), p.Name, h.ID)
			ch <- prometheus.MustNewConstMetric(hostStateDesc, prometheus.GaugeValue, 1, p.Name, h.ID, h.State)
		}
		if d, ok := c.discovery.Status(p.Name); ok {
			ch <- prometheus.MustNewConstMetric(discoveryRefreshDesc, prometheus.CounterValue, float64(d.Refreshes), p.Name, d.Kind)
			ch <- prometheus.MustNewConstMetric(discoveryErrorDesc, prometheus.CounterValue, float64(d.Errors), p.Name, d.Kind)
		}
	}
}

// tlsCollector reports the listeners' certificates: when each expires, and
// how its reloads went (registered only when TLS is on for one).
type tlsCollector struct{ certs []Certificate }

var (
	tlsExpiryDesc = prometheus.NewDesc(namespace+"_tls_certificate_expiry_timestamp_seconds",
		"When the listener's certificate in force expires (Unix time).", []string{"listener"}, nil)
	tlsReloadsDesc = prometheus.NewDesc(namespace+"_tls_reloads_total",
		"Changed TLS files of the listener put in force.", []string{"listener"}, nil)
	tlsRefusedDesc = prometheus.NewDesc(namespace+"_tls_reload_errors_total",
		"Changed TLS files refused (the previous certificate stayed).", []string{"listener"}, nil)
)

func (c *tlsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tlsExpiryDesc
	ch <- tlsReloadsDesc
	ch <- tlsRefusedDesc
}

func (c *tlsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.certs {
		l := strings.ToLower(s.Listener())
		ch <- prometheus.MustNewConstMetric(tlsExpiryDesc, prometheus.GaugeValue, float64(s.NotAfter().Unix()), l)
		ch <- prometheus.MustNewConstMetric(tlsReloadsDesc, prometheus.CounterValue, float64(s.Reloads()), l)
		ch <- prometheus.MustNewConstMetric(tlsRefusedDesc, prometheus.CounterValue, float64(s.Refused()), l)
	}
}
