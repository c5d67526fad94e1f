package runner

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/discovery"
	"github.com/envoy-affinity/envoy-affinity/internal/poolstate"
)

// LoadSetter takes the load readings of a pool and tells whether the pool
// places by them now (the engine).
type LoadSetter interface {
	SetLoad(pool string, byAddress map[string]float64, at time.Time)
	LoadFresh(pool string, now time.Time) bool
}

// Loads reads the requests in flight of the hosts of each pool that has a
// load block, from every Envoy in front of it, and restarts a pool's
// reader when a reload changes where or how often it reads.
type Loads struct {
	workers *poolWorkers[affinity.LoadSource, *loadStats]
}

// loadStats count a pool's reads, one per Envoy per round.
type loadStats struct {
	reads, errors atomic.Uint64
}

// NewLoads runs the readers until ctx ends, handing their readings to
// engine. A nil log discards.
func NewLoads(ctx context.Context, engine LoadSetter, log *slog.Logger) *Loads {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	run := func(ctx context.Context, pool string, src affinity.LoadSource, stats *loadStats) {
		r := &loadReader{engine: engine, pool: pool, src: src, stats: stats, log: log.With("pool", pool),
			client: &http.Client{Timeout: src.Interval}}
		r.run(ctx)
	}
	return &Loads{newPoolWorkers(ctx, func(string, affinity.LoadSource) *loadStats { return &loadStats{} }, run)}
}

// Reconcile starts the readers the snapshot names and stops the others.
func (l *Loads) Reconcile(snap *affinity.Snapshot) {
	want := map[string]affinity.LoadSource{}
	for _, p := range snap.Pools {
		if p.Load != nil {
			want[p.Name] = p.Load.Source
		}
	}
	l.workers.reconcile(want)
}

// Status reports how reading the pool's load goes; false when the pool
// has no reader.
func (l *Loads) Status(pool string) (poolstate.Load, bool) {
	_, stats, ok := l.workers.lookup(pool)
	if !ok {
		return poolstate.Load{}, false
	}
	return poolstate.Load{Reads: stats.reads.Load(), Errors: stats.errors.Load()}, true
}

// Wait blocks until every reader has stopped (after the context ends).
func (l *Loads) Wait() { l.workers.wait() }

// loadReader reads one pool's load every interval.
type loadReader struct {
	engine LoadSetter
	pool   string
	src    affinity.LoadSource
	stats  *loadStats
	client *http.Client
	log    *slog.Logger
	// smoothed is the last value handed to the engine, by address.
	smoothed map[string]float64
	// fresh is whether the pool placed by load after the last round, so
	// that a change is logged once.
	fresh bool
}

func (r *loadReader) run(ctx context.Context) {
	t := time.NewTicker(r.src.Interval)
	defer t.Stop()
	for {
		r.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// round reads every Envoy at once and sums their counts by host; an Envoy
// that fails is left out of the sum (and counted), and when all fail
// nothing is set: the last reading goes stale by itself.
func (r *loadReader) round(ctx context.Context) {
	admins := r.src.AdminList()
	readings := make([]map[string]float64, len(admins))
	errs := make([]error, len(admins))
	var wg sync.WaitGroup
	for i, a := range admins {
		wg.Go(func() {
			readings[i], errs[i] = discovery.RequestsInFlight(ctx, r.client, discovery.AdminURL(a), r.src.Cluster)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	var sum map[string]float64
	for i, reading := range readings {
		if errs[i] != nil {
			r.stats.errors.Add(1)
			r.log.Debug("an Envoy's load could not be read", "admin", admins[i], "error", errs[i])
			continue
		}
		r.stats.reads.Add(1)
		if sum == nil {
			sum = make(map[string]float64, len(reading))
		}
		for addr, n := range reading {
			sum[addr] += n
		}
	}
	now := time.Now()
	if sum != nil {
		r.smoothed = smooth(r.smoothed, sum)
		r.engine.SetLoad(r.pool, r.smoothed, now)
	}
	fresh := r.engine.LoadFresh(r.pool, now)
	switch {
	case fresh && !r.fresh:
		r.log.Info("load signal fresh: new sessions are placed by the hosts' requests in flight")
	case !fresh && r.fresh:
		r.log.Warn("load signal stale: new sessions are placed by rendezvous order alone until an Envoy answers again", "errors", r.stats.errors.Load())
	}
	r.fresh = fresh
}

// loadWeight is how fast a host's value falls to a lower reading: half the
// way each reading. Requests in flight at one instant swing by a few
// around their mean, and one reading serves every placement until the
// next: a busy host whose count dipped at that instant would otherwise
// take every session of which it is one of the first two choices until
// then. A higher reading counts at once, so a host that turns busy, or an
// idle one that just joined and takes its first sessions, is seen so at
// once.
const loadWeight = 0.5

// smooth returns the values to place by, by address, from the previous
// ones (nil: none yet) and a new reading: a reading at or above the
// previous value as it is, a lower one half the way down; a host the
// reading lacks counts 0.
func smooth(prev, reading map[string]float64) map[string]float64 {
	next := make(map[string]float64, len(reading))
	for addr, n := range reading {
		if p, ok := prev[addr]; ok && n < p {
			n = p + loadWeight*(n-p)
		}
		next[addr] = n
	}
	for addr, p := range prev {
		if _, ok := reading[addr]; !ok && p*(1-loadWeight) >= 0.01 {
			next[addr] = p * (1 - loadWeight)
		}
	}
	return next
}
