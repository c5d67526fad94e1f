package main

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
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
	// envoyProblems and envoyChecks report the doctor's checks of the
	// co-located Envoy (pools[].discovery.envoy).
	envoyProblems *prometheus.GaugeVec
	envoyChecks   *prometheus.CounterVec
}

const namespace = "envoy_affinity"

func newMetrics(engine *affinity.Engine, disc *discoveries, shared *redisstore.Store, certs ...*serverTLS) *metrics {
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
		envoyProblems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "envoy_config", Name: "problems",
			Help: "Problems the last check of Envoy's configuration found, by severity (error: sessions break; warning: they hold at a cost). See /debug/doctor.",
		}, []string{"severity"}),
		envoyChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "envoy_config", Name: "checks_total",
			Help: "Checks of Envoy's configuration by result: checked, or unreachable (Envoy's admin API did not answer).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.decisions, m.latency, m.streams, m.reloads, m.reloadFails, m.envoyProblems, m.envoyChecks, &stateCollector{engine: engine, disc: disc},
		// go_goroutines, go_memstats_*, process_resident_memory_bytes and
		// the rest of the runtime's and the process's own figures.
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tc := &tlsCollector{}
	for _, c := range certs {
		if c != nil {
			tc.certs = append(tc.certs, c)
		}
	}
	if len(tc.certs) > 0 {
		m.reg.MustRegister(tc)
	}
	if shared != nil {
		m.reg.MustRegister(&storeCollector{store: shared})
	}
	return m
}

// storeCollector reports the shared store (registered only with Redis).
type storeCollector struct{ store *redisstore.Store }

var (
	storeSharedDesc = prometheus.NewDesc(namespace+"_store_shared",
		"1 while the replica answers from Redis, 0 while it answers from its own memory.", nil, nil)
	storeCommandsDesc = prometheus.NewDesc(namespace+"_store_redis_commands_total",
		"Commands sent to Redis: kind read (bindings, on the request path), write (claims, re-bindings, touches) or sync (the count exchange, drains, write-back).", []string{"kind"}, nil)
	storeCacheHitsDesc = prometheus.NewDesc(namespace+"_store_redis_cache_hits_total",
		"Binding reads answered from the client-side cache (no round trip).", nil, nil)
	storeErrorsDesc = prometheus.NewDesc(namespace+"_store_redis_errors_total",
		"Redis commands that failed or passed store.redis.timeout.", nil, nil)
	storeLocalDesc = prometheus.NewDesc(namespace+"_store_local_answers_total",
		"Requests answered from the replica's own memory because Redis was unreachable or slow.", nil, nil)
	storeOutagesDesc = prometheus.NewDesc(namespace+"_store_redis_outages_total",
		"Changes from shared to local mode.", nil, nil)
	storeRestoredDesc = prometheus.NewDesc(namespace+"_store_restored_total",
		"Bindings Redis did not have (lost in a restart without persistence) answered from the replica's memory and written back.", nil, nil)
	storeDroppedDesc = prometheus.NewDesc(namespace+"_store_pending_dropped_total",
		"Bindings made while Redis was unreachable that did not fit in the queue written back after (100,000).", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{storeSharedDesc, storeCommandsDesc, storeCacheHitsDesc, storeErrorsDesc, storeLocalDesc, storeOutagesDesc, storeRestoredDesc, storeDroppedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.store.Counters()
	shared := 0.0
	if c.store.Shared() {
		shared = 1
	}
	ch <- prometheus.MustNewConstMetric(storeSharedDesc, prometheus.GaugeValue, shared)
	ch <- prometheus.MustNewConstMetric(storeCommandsDesc, prometheus.CounterValue, float64(st.Reads.Load()), "read")
	ch <- prometheus.MustNewConstMetric(storeCommandsDesc, prometheus.CounterValue, float64(st.Writes.Load()), "write")
	ch <- prometheus.MustNewConstMetric(storeCommandsDesc, prometheus.CounterValue, float64(st.Syncs.Load()), "sync")
	ch <- prometheus.MustNewConstMetric(storeCacheHitsDesc, prometheus.CounterValue, float64(st.CacheHits.Load()))
	ch <- prometheus.MustNewConstMetric(storeErrorsDesc, prometheus.CounterValue, float64(st.Errors.Load()))
	ch <- prometheus.MustNewConstMetric(storeLocalDesc, prometheus.CounterValue, float64(st.LocalAnswers.Load()))
	ch <- prometheus.MustNewConstMetric(storeOutagesDesc, prometheus.CounterValue, float64(st.Outages.Load()))
	ch <- prometheus.MustNewConstMetric(storeRestoredDesc, prometheus.CounterValue, float64(st.Restored.Load()))
	ch <- prometheus.MustNewConstMetric(storeDroppedDesc, prometheus.CounterValue, float64(st.PendingDropped.Load()))
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

// tlsCollector reports the listeners' certificates: when each expires, and
// how its reloads went (registered only when TLS is on for one).
type tlsCollector struct{ certs []*serverTLS }

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
		l := strings.ToLower(s.listener)
		ch <- prometheus.MustNewConstMetric(tlsExpiryDesc, prometheus.GaugeValue, float64(s.notAfter().Unix()), l)
		ch <- prometheus.MustNewConstMetric(tlsReloadsDesc, prometheus.CounterValue, float64(s.reloads.Load()), l)
		ch <- prometheus.MustNewConstMetric(tlsRefusedDesc, prometheus.CounterValue, float64(s.refused.Load()), l)
	}
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
	passiveRefusedDesc = prometheus.NewDesc(namespace+"_passive_holds_refused_total",
		"Passive health holds refused because the pool already had health.passive.max_down_percent of its hosts held down.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hostActiveDesc
	ch <- hostStateDesc
	ch <- sourceRefreshDesc
	ch <- sourceErrorDesc
	ch <- passiveRefusedDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	ch <- prometheus.MustNewConstMetric(passiveRefusedDesc, prometheus.CounterValue, float64(c.engine.PassiveHoldsRefused()))
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
