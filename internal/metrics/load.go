package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/envoy-affinity/envoy-affinity/internal/poolstate"
)

// LoadReads reports how reading each pool's load goes (false: the pool
// has no reader).
type LoadReads interface {
	Status(pool string) (poolstate.Load, bool)
}

// loadCollector reports the load signal of the pools that have a load
// block: whether it is fresh, each host's requests in flight as last
// read, and the reads of the Envoys' admin APIs. Pools without one add no
// series.
type loadCollector struct {
	engine Engine
	reads  LoadReads // nil: no reader runs
}

var (
	loadFreshDesc = prometheus.NewDesc(namespace+"_load_signal_fresh",
		"1 while new sessions of the pool are placed by its hosts' requests in flight (a reading newer than load.stale_after), 0 while they are placed by rendezvous order alone.", []string{"pool"}, nil)
	hostLoadDesc = prometheus.NewDesc(namespace+"_host_load",
		"Requests in flight per host, summed over the Envoys of the pool's load block, as last read.", []string{"pool", "host"}, nil)
	loadReadsDesc = prometheus.NewDesc(namespace+"_load_reads_total",
		"Reads of an Envoy's admin API for the pool's load that answered.", []string{"pool"}, nil)
	loadErrorsDesc = prometheus.NewDesc(namespace+"_load_read_errors_total",
		"Reads of an Envoy's admin API for the pool's load that failed (that Envoy was left out of the reading).", []string{"pool"}, nil)
)

func (c *loadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- loadFreshDesc
	ch <- hostLoadDesc
	ch <- loadReadsDesc
	ch <- loadErrorsDesc
}

func (c *loadCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, p := range c.engine.Snapshot().Pools {
		if p.Load == nil {
			continue
		}
		fresh := 0.0
		if c.engine.LoadFresh(p.Name, now) {
			fresh = 1
		}
		ch <- prometheus.MustNewConstMetric(loadFreshDesc, prometheus.GaugeValue, fresh, p.Name)
		if load, _, ok := c.engine.HostLoad(p.Name); ok {
			for _, h := range poolstate.Hosts(p) {
				ch <- prometheus.MustNewConstMetric(hostLoadDesc, prometheus.GaugeValue, load[h.Address], p.Name, h.ID)
			}
		}
		if c.reads == nil {
			continue
		}
		if s, ok := c.reads.Status(p.Name); ok {
			ch <- prometheus.MustNewConstMetric(loadReadsDesc, prometheus.CounterValue, float64(s.Reads), p.Name)
			ch <- prometheus.MustNewConstMetric(loadErrorsDesc, prometheus.CounterValue, float64(s.Errors), p.Name)
		}
	}
}
