package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// checkers runs the active health check of each pool that has one and
// restarts it when a reload changes it.
type checkers struct {
	ctx    context.Context
	engine *affinity.Engine
	log    *slog.Logger

	mu      sync.Mutex
	running map[string]runningCheck
	wg      sync.WaitGroup
}

type runningCheck struct {
	config string
	cancel context.CancelFunc
}

func newCheckers(ctx context.Context, engine *affinity.Engine, log *slog.Logger) *checkers {
	return &checkers{ctx: ctx, engine: engine, log: log, running: map[string]runningCheck{}}
}

func (c *checkers) reconcile(snap *affinity.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := map[string]bool{}
	for _, p := range snap.Pools {
		if p.Health == nil || p.Health.Active == nil {
			continue
		}
		want[p.Name] = true
		conf := fmt.Sprintf("%+v", *p.Health.Active)
		if r, ok := c.running[p.Name]; ok {
			if r.config == conf {
				continue
			}
			r.cancel()
		}
		ctx, cancel := context.WithCancel(c.ctx)
		c.running[p.Name] = runningCheck{config: conf, cancel: cancel}
		pool, hc := p.Name, *p.Health.Active
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.check(ctx, pool, hc)
		}()
	}
	for name, r := range c.running {
		if !want[name] {
			r.cancel()
			delete(c.running, name)
		}
	}
}

func (c *checkers) wait() { c.wg.Wait() }

// check probes every host of the pool (as its source lists them) every
// interval; a host turns unhealthy after UnhealthyThreshold failures in a
// row and healthy again after HealthyThreshold successes.
func (c *checkers) check(ctx context.Context, pool string, hc affinity.ActiveHealthConfig) {
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
