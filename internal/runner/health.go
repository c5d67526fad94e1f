package runner

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// HealthSetter is what the probes read from and tell the engine.
type HealthSetter interface {
	Snapshot() *affinity.Snapshot
	SetActiveHealth(pool, addr string, healthy bool)
}

// Probers runs the active health probes of each pool that configures them
// and restarts them when a reload changes their configuration.
type Probers struct {
	workers *poolWorkers[affinity.ActiveHealth, struct{}]
}

// NewProbers runs probes until ctx ends, telling engine their verdicts.
func NewProbers(ctx context.Context, engine HealthSetter, log *slog.Logger) *Probers {
	p := &prober{engine: engine, log: log}
	return &Probers{newPoolWorkers(ctx, func(string, affinity.ActiveHealth) struct{} { return struct{}{} }, p.run)}
}

// Reconcile starts the probes the snapshot names and stops the others.
func (p *Probers) Reconcile(snap *affinity.Snapshot) {
	want := map[string]affinity.ActiveHealth{}
	for _, pool := range snap.Pools {
		if pool.Health.Active != nil {
			want[pool.Name] = *pool.Health.Active
		}
	}
	p.workers.reconcile(want)
}

// Wait blocks until every probe has stopped (after the context ends).
func (p *Probers) Wait() { p.workers.wait() }

// prober probes hosts and tells the engine their verdicts.
type prober struct {
	engine HealthSetter
	log    *slog.Logger
}

// run probes every host of the pool (as its discovery lists them) every
// interval; a host turns unhealthy after UnhealthyThreshold failures in a
// row and healthy again after HealthyThreshold successes.
func (pr *prober) run(ctx context.Context, pool string, conf affinity.ActiveHealth, _ struct{}) {
	client := &http.Client{Timeout: conf.Timeout}
	log := pr.log.With("pool", pool)
	type state struct {
		fails, oks int
		down       bool
	}
	states := map[string]*state{}
	t := time.NewTicker(conf.Interval)
	defer t.Stop()
	for {
		var hosts []affinity.HostSpec
		for _, p := range pr.engine.Snapshot().Pools {
			if p.Name == pool {
				hosts = p.Specs
			}
		}
		for _, h := range hosts {
			st := states[h.Address]
			if st == nil {
				st = &state{}
				states[h.Address] = st
			}
			ok := probe(ctx, client, "http://"+h.Address+conf.Path)
			if ctx.Err() != nil {
				return
			}
			if ok {
				st.oks, st.fails = st.oks+1, 0
			} else {
				st.fails, st.oks = st.fails+1, 0
			}
			switch {
			case !st.down && st.fails >= conf.UnhealthyThreshold:
				st.down = true
				pr.engine.SetActiveHealth(pool, h.Address, false)
				log.Warn("host failed its health check", "host", h.Address)
			case st.down && st.oks >= conf.HealthyThreshold:
				st.down = false
				pr.engine.SetActiveHealth(pool, h.Address, true)
				log.Info("host passes its health check again", "host", h.Address)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe reports whether a GET of url answers 2xx.
func probe(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}
