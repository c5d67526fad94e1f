package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
)

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
