package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

// metrics are the service's Prometheus metrics, served at /metrics on the
// admin listener. Labels stay bounded: pools and hosts come from the
// configuration, outcomes and reasons are fixed sets; no session id or
// cookie is ever a label.
type metrics struct {
	reg         *prometheus.Registry
	decisions   *prometheus.CounterVec
	latency     prometheus.Histogram
	streams     prometheus.Gauge
	reloads     prometheus.Counter
	reloadFails prometheus.Counter
}

const namespace = "envoy_affinity"

func newMetrics(engine *affinity.Engine, disc *discoveries, certs *serverTLS) *metrics {
	m := &metrics{
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
	}
	m.reg.MustRegister(m.decisions, m.latency, m.streams, m.reloads, m.reloadFails, &stateCollector{engine: engine, disc: disc})
	if certs != nil {
		m.reg.MustRegister(&tlsCollector{certs: certs})
	}
	return m
}

// StreamOpened implements extproc.Observer.
func (m *metrics) StreamOpened() { m.streams.Inc() }

// StreamClosed implements extproc.Observer.
func (m *metrics) StreamClosed() { m.streams.Dec() }

// Decided implements extproc.Observer.
func (m *metrics) Decided(d affinity.Decision, took time.Duration) {
	m.decisions.WithLabelValues(d.Pool, d.Outcome.String(), d.ReasonLabel()).Inc()
	m.latency.Observe(took.Seconds())
}

// Rebound implements extproc.Observer.
func (m *metrics) Rebound(pool string, reason affinity.Reason) {
	m.decisions.WithLabelValues(pool, affinity.OutcomeRebound.String(), reason.String()).Inc()
}

// tlsCollector reports the gRPC listener's certificate: when it expires, and
// how its reloads went (registered only when TLS is on).
type tlsCollector struct{ certs *serverTLS }

var (
	tlsExpiryDesc = prometheus.NewDesc(namespace+"_tls_certificate_expiry_timestamp_seconds",
		"When the gRPC listener's certificate in force expires (Unix time).", nil, nil)
	tlsReloadsDesc = prometheus.NewDesc(namespace+"_tls_reloads_total",
		"Changed TLS files of the gRPC listener put in force.", nil, nil)
	tlsRefusedDesc = prometheus.NewDesc(namespace+"_tls_reload_errors_total",
		"Changed TLS files refused (the previous certificate stayed).", nil, nil)
)

func (c *tlsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tlsExpiryDesc
	ch <- tlsReloadsDesc
	ch <- tlsRefusedDesc
}

func (c *tlsCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(tlsExpiryDesc, prometheus.GaugeValue, float64(c.certs.notAfter().Unix()))
	ch <- prometheus.MustNewConstMetric(tlsReloadsDesc, prometheus.CounterValue, float64(c.certs.reloads.Load()))
	ch <- prometheus.MustNewConstMetric(tlsRefusedDesc, prometheus.CounterValue, float64(c.certs.refused.Load()))
}

// stateCollector reads hosts, their state and active sessions, and the host
// sources' counters when Prometheus scrapes, so none of it costs anything on
// the request path.
type stateCollector struct {
	engine *affinity.Engine
	disc   *discoveries
}

var (
	hostActiveDesc = prometheus.NewDesc(namespace+"_host_active_sessions",
		"Active sessions per host (bounded loads count them; 0 when bounded loads are off).", []string{"pool", "host"}, nil)
	hostStateDesc = prometheus.NewDesc(namespace+"_host_state",
		"1 for each host's state: active, draining, or down (held down by the service's health checks).", []string{"pool", "host", "state"}, nil)
	sourceRefreshDesc = prometheus.NewDesc(namespace+"_discovery_refreshes_total",
		"Good reads of a pool's host source.", []string{"pool", "source"}, nil)
	sourceErrorDesc = prometheus.NewDesc(namespace+"_discovery_errors_total",
		"Failed or empty reads of a pool's host source (the last good hosts stayed).", []string{"pool", "source"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hostActiveDesc
	ch <- hostStateDesc
	ch <- sourceRefreshDesc
	ch <- sourceErrorDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, p := range c.engine.Snapshot().Pools {
		load := c.engine.ActiveSessions(p.Name, now)
		for _, hs := range hostStates(p) {
			ch <- prometheus.MustNewConstMetric(hostActiveDesc, prometheus.GaugeValue, float64(load[hs.host.ID]), p.Name, hs.host.ID)
			ch <- prometheus.MustNewConstMetric(hostStateDesc, prometheus.GaugeValue, 1, p.Name, hs.host.ID, hs.state)
		}
		if kind, refreshes, errs, _, ok := c.disc.status(p.Name); ok {
			ch <- prometheus.MustNewConstMetric(sourceRefreshDesc, prometheus.CounterValue, float64(refreshes), p.Name, kind)
			ch <- prometheus.MustNewConstMetric(sourceErrorDesc, prometheus.CounterValue, float64(errs), p.Name, kind)
		}
	}
}

var _ extproc.Observer = (*metrics)(nil)
