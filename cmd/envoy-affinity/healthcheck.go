package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// checkers runs the active health check of each pool that has one and
// restarts it when a reload changes it.
type checkers struct {
	*poolWorkers[affinity.ActiveHealth, struct{}]
}

func newCheckers(ctx context.Context, engine *affinity.Engine, log *slog.Logger) *checkers {
	c := &checker{engine: engine, log: log}
	return &checkers{newPoolWorkers(ctx, func(string, affinity.ActiveHealth) struct{} { return struct{}{} }, c.check)}
}

// reconcile starts the checks the snapshot names and stops the others.
func (c *checkers) reconcile(snap *affinity.Snapshot) {
	want := map[string]affinity.ActiveHealth{}
	for _, p := range snap.Pools {
		if p.Health.Active != nil {
			want[p.Name] = *p.Health.Active
		}
	}
	c.poolWorkers.reconcile(want)
}

// checker probes hosts and tells the engine their verdicts.
type checker struct {
	engine *affinity.Engine
	log    *slog.Logger
}

// check probes every host of the pool (as its source lists them) every
// interval; a host turns unhealthy after UnhealthyThreshold failures in a
// row and healthy again after HealthyThreshold successes.
func (c *checker) check(ctx context.Context, pool string, hc affinity.ActiveHealth, _ struct{}) {
	client := &http.Client{Timeout: hc.Timeout}
	log := c.log.With("pool", pool)
	type state struct {
		fails, oks int
		down       bool
	}
	states := map[string]*state{}
	t := time.NewTicker(hc.Interval)
	defer t.Stop()
	for {
		var hosts []affinity.HostSpec
		for _, p := range c.engine.Snapshot().Pools {
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
			ok := probe(ctx, client, "http://"+h.Address+hc.Path)
			if ctx.Err() != nil {
				return
			}
			if ok {
				st.oks, st.fails = st.oks+1, 0
			} else {
				st.fails, st.oks = st.fails+1, 0
			}
			switch {
			case !st.down && st.fails >= hc.UnhealthyThreshold:
				st.down = true
				c.engine.SetActiveHealth(pool, h.Address, false)
				log.Warn("host failed its health check", "host", h.Address)
			case st.down && st.oks >= hc.HealthyThreshold:
				st.down = false
				c.engine.SetActiveHealth(pool, h.Address, true)
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
