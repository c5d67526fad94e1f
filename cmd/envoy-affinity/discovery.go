package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/discovery"
)

// discoveries runs one host source per pool that has one, and restarts it
// when a reload changes its configuration.
type discoveries struct {
	*poolWorkers[affinity.HostSource, *discovery.Stats]
}

func newDiscoveries(ctx context.Context, engine *affinity.Engine, log *slog.Logger) *discoveries {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	run := func(ctx context.Context, pool string, conf affinity.HostSource, stats *discovery.Stats) {
		discovery.Run(ctx, source(conf), conf.Interval, func(hosts []affinity.HostSpec) { engine.SetHosts(pool, hosts) },
			stats, log.With("pool", pool, "source", string(conf.Kind)))
	}
	newStats := func(string, affinity.HostSource) *discovery.Stats { return &discovery.Stats{} }
	return &discoveries{newPoolWorkers(ctx, newStats, run)}
}

// reconcile starts the sources the snapshot names and stops the others.
func (d *discoveries) reconcile(snap *affinity.Snapshot) {
	want := map[string]affinity.HostSource{}
	for _, p := range snap.Pools {
		if p.Source != nil {
			want[p.Name] = *p.Source
		}
	}
	d.poolWorkers.reconcile(want)
}

// status reports a pool's source: its kind, refreshes, errors and the time
// of its last good answer.
func (d *discoveries) status(pool string) (kind string, refreshes, errors uint64, last time.Time, ok bool) {
	d.mu.Lock()
	r, ok := d.running[pool]
	d.mu.Unlock()
	if !ok {
		return "static", 0, 0, time.Time{}, false
	}
	if ns := r.state.LastGood.Load(); ns > 0 {
		last = time.Unix(0, ns)
	}
	return string(r.conf.Kind), r.state.Refreshes.Load(), r.state.Errors.Load(), last, true
}

func source(c affinity.HostSource) discovery.Source {
	if c.Kind == affinity.SourceEnvoy {
		return discovery.NewEnvoyAdmin(c.Envoy.Admin, c.Envoy.Cluster, c.DrainTimeout)
	}
	return discovery.NewDNS(c.DNS.Name, c.DNS.Port, c.DNS.SRV, c.DNS.Server)
}
