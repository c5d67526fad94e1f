package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/discovery"
)

// discoveries runs one host source per pool that has one, and restarts it
// when a reload changes its configuration.
type discoveries struct {
	ctx    context.Context
	engine *affinity.Engine
	log    *slog.Logger

	mu      sync.Mutex
	running map[string]*runningSource // by pool name
	wg      sync.WaitGroup
}

type runningSource struct {
	config string // the source's configuration, to notice changes
	kind   string
	stats  *discovery.Stats
	cancel context.CancelFunc
}

func newDiscoveries(ctx context.Context, engine *affinity.Engine, log *slog.Logger) *discoveries {
	return &discoveries{ctx: ctx, engine: engine, log: log, running: map[string]*runningSource{}}
}

// reconcile starts the sources the snapshot names and stops the others.
func (d *discoveries) reconcile(snap *affinity.Snapshot) {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[string]bool{}
	for _, p := range snap.Pools {
		if p.Discovery == nil {
			continue
		}
		want[p.Name] = true
		conf := describe(p.Discovery)
		if r, ok := d.running[p.Name]; ok {
			if r.config == conf {
				continue
			}
			r.cancel()
		}
		src, kind := source(p.Discovery)
		ctx, cancel := context.WithCancel(d.ctx)
		r := &runningSource{config: conf, kind: kind, stats: &discovery.Stats{}, cancel: cancel}
		d.running[p.Name] = r
		name, every, log := p.Name, p.Discovery.Interval, d.log.With("pool", p.Name, "source", kind)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			discovery.Run(ctx, src, every, func(hosts []affinity.HostSpec) { d.engine.SetHosts(name, hosts) }, r.stats, log)
		}()
	}
	for name, r := range d.running {
		if !want[name] {
			r.cancel()
			delete(d.running, name)
		}
	}
}

// wait blocks until every source has stopped (after the context ends).
func (d *discoveries) wait() { d.wg.Wait() }

// status reports a pool's source: its kind, refreshes, errors and the time
// of its last good answer.
func (d *discoveries) status(pool string) (kind string, refreshes, errors uint64, last time.Time, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.running[pool]
	if !ok {
		return "static", 0, 0, time.Time{}, false
	}
	if ns := r.stats.LastGood.Load(); ns > 0 {
		last = time.Unix(0, ns)
	}
	return r.kind, r.stats.Refreshes.Load(), r.stats.Errors.Load(), last, true
}

func source(c *affinity.DiscoveryConfig) (discovery.Source, string) {
	if c.Envoy != nil {
		return discovery.NewEnvoyAdmin(c.Envoy.Admin, c.Envoy.Cluster, c.DrainTimeout), "envoy"
	}
	return discovery.NewDNS(c.DNS.Name, c.DNS.Port, c.DNS.SRV, c.DNS.Server), "dns"
}

func describe(c *affinity.DiscoveryConfig) string {
	s := fmt.Sprintf("interval=%v drain=%v", c.Interval, c.DrainTimeout)
	if c.Envoy != nil {
		s += fmt.Sprintf(" envoy=%+v", *c.Envoy)
	}
	if c.DNS != nil {
		s += fmt.Sprintf(" dns=%+v", *c.DNS)
	}
	return s
}
