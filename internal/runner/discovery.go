package runner

import (
	"context"
	"log/slog"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/discovery"
	"github.com/envoy-affinity/envoy-affinity/internal/poolstate"
)

// HostSetter takes the hosts a pool's discovery found (the engine).
type HostSetter interface {
	SetHosts(pool string, hosts []affinity.HostSpec)
}

// Discoveries runs the discovery of each pool that has one, and restarts
// it when a reload changes its configuration.
type Discoveries struct {
	workers *poolWorkers[affinity.Discovery, *discovery.Stats]
}

// NewDiscoveries runs discoveries until ctx ends, handing what they find
// to engine. A nil log discards.
func NewDiscoveries(ctx context.Context, engine HostSetter, log *slog.Logger) *Discoveries {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	run := func(ctx context.Context, pool string, conf affinity.Discovery, stats *discovery.Stats) {
		discovery.Run(ctx, ListerFor(conf), conf.Interval, func(hosts []affinity.HostSpec) { engine.SetHosts(pool, hosts) },
			stats, log.With("pool", pool, "source", string(conf.Kind)))
	}
	newStats := func(string, affinity.Discovery) *discovery.Stats { return &discovery.Stats{} }
	return &Discoveries{newPoolWorkers(ctx, newStats, run)}
}

// Reconcile starts the discoveries the snapshot names and stops the others.
func (d *Discoveries) Reconcile(snap *affinity.Snapshot) {
	want := map[string]affinity.Discovery{}
	for _, p := range snap.Pools {
		if p.Discovery != nil {
			want[p.Name] = *p.Discovery
		}
	}
	d.workers.reconcile(want)
}

// Status reports how the pool's discovery goes; false when the pool has
// none running (its hosts are the configuration's).
func (d *Discoveries) Status(pool string) (poolstate.Discovery, bool) {
	conf, stats, ok := d.workers.lookup(pool)
	if !ok {
		return poolstate.Discovery{}, false
	}
	s := poolstate.Discovery{Kind: string(conf.Kind), Refreshes: stats.Refreshes.Load(), Errors: stats.Errors.Load()}
	if ns := stats.LastGood.Load(); ns > 0 {
		s.LastRefresh = time.Unix(0, ns)
	}
	return s, true
}

// Wait blocks until every discovery has stopped (after the context ends).
func (d *Discoveries) Wait() { d.workers.wait() }

// ListerFor is the Lister a pool's discovery configuration reads its hosts with.
func ListerFor(c affinity.Discovery) discovery.Lister {
	if c.Kind == affinity.DiscoveryEnvoy {
		return discovery.NewEnvoyAdmin(c.Envoy.Admin, c.Envoy.Cluster, c.DrainTimeout)
	}
	return discovery.NewDNS(c.DNS.Name, c.DNS.Port, c.DNS.SRV, c.DNS.Server)
}
