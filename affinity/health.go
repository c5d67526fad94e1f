package affinity

import (
	"time"
)

// HealthConfig turns on the service's own view of host health, on top of
// what the host source says.
type HealthConfig struct {
	// Passive marks a host down when Envoy had to serve its session
	// elsewhere (the primary could not be reached), or after Status5xx
	// answers with a 5xx status within Window.
	Passive *PassiveHealthConfig `yaml:"passive"`
	// Active checks each host over HTTP.
	Active *ActiveHealthConfig `yaml:"active"`
}

// PassiveHealthConfig: how long a failed host stays down. The backoff
// doubles each time the host goes down again, up to MaxBackoff, and starts
// over once the host has stayed up for MaxBackoff.
type PassiveHealthConfig struct {
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// Status5xx is how many 5xx answers within Window mark the host down
	// (0: 5xx answers do not count).
	Status5xx int           `yaml:"status_5xx"`
	Window    time.Duration `yaml:"window"`
}

// ActiveHealthConfig checks hosts with GET Path.
type ActiveHealthConfig struct {
	Path               string        `yaml:"path"`
	Interval           time.Duration `yaml:"interval"`
	Timeout            time.Duration `yaml:"timeout"`
	UnhealthyThreshold int           `yaml:"unhealthy_threshold"`
	HealthyThreshold   int           `yaml:"healthy_threshold"`
}

// hostHealth is one host's state in the service's own health view.
type hostHealth struct {
	activeDown bool      // the active check failed
	until      time.Time // passive: down until then
	backoff    time.Duration
	upSince    time.Time
	fails      []time.Time // recent 5xx answers
}

func (h *hostHealth) down(now time.Time) bool { return h.activeDown || now.Before(h.until) }

// MarkDown records a passive failure of the host at served (ip:port) of the
// pool: it is down for its backoff, which doubles each time. It reports
// whether the host is now down.
func (e *Engine) MarkDown(pool, cluster, served string) bool {
	return e.health(pool, cluster, served, func(p *Pool, h *hostHealth, now time.Time) {
		ph := p.Health.Passive
		switch {
		case h.backoff == 0 || now.Sub(h.upSince) >= ph.MaxBackoff && !h.down(now):
			h.backoff = ph.Backoff
		case !h.down(now):
			h.backoff = min(2*h.backoff, ph.MaxBackoff)
		}
		h.until = now.Add(h.backoff)
		h.fails = h.fails[:0]
	}, func(p *Pool) bool { return p.Health != nil && p.Health.Passive != nil })
}

// Count5xx records a 5xx answer of the host at served; enough of them
// within the window mark it down (passive health).
func (e *Engine) Count5xx(pool, cluster, served string) bool {
	return e.health(pool, cluster, served, func(p *Pool, h *hostHealth, now time.Time) {
		ph := p.Health.Passive
		keep := h.fails[:0]
		for _, t := range h.fails {
			if now.Sub(t) < ph.Window {
				keep = append(keep, t)
			}
		}
		h.fails = append(keep, now)
		if len(h.fails) >= ph.Status5xx {
			if !h.down(now) {
				h.backoff = min(max(2*h.backoff, ph.Backoff), ph.MaxBackoff)
			}
			h.until = now.Add(h.backoff)
			h.fails = h.fails[:0]
		}
	}, func(p *Pool) bool {
		return p.Health != nil && p.Health.Passive != nil && p.Health.Passive.Status5xx > 0
	})
}

// SetActiveHealth records the active check's verdict on the host at addr.
func (e *Engine) SetActiveHealth(pool, addr string, healthy bool) {
	e.health(pool, "", addr, func(_ *Pool, h *hostHealth, _ time.Time) { h.activeDown = !healthy },
		func(p *Pool) bool { return p.Health != nil && p.Health.Active != nil })
}

// health changes one host's health under the writer lock and, when the
// host's up/down state changed, rebuilds the pool's host sets.
func (e *Engine) health(pool, cluster, addr string, change func(*Pool, *hostHealth, time.Time), enabled func(*Pool) bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.snap.Load()
	p, ok := s.Pool(pool, cluster)
	if !ok || !enabled(p) {
		return false
	}
	var spec HostSpec
	found := false
	for _, h := range p.Specs {
		if h.Address == addr {
			spec, found = h, true
		}
	}
	if !found {
		return false
	}
	id := NewHost(spec.Name, spec.Address, 1).ID
	if e.hostHealth == nil {
		e.hostHealth = map[string]map[string]*hostHealth{}
	}
	hosts := e.hostHealth[p.Name]
	if hosts == nil {
		hosts = map[string]*hostHealth{}
		e.hostHealth[p.Name] = hosts
	}
	h := hosts[id]
	if h == nil {
		h = &hostHealth{}
		hosts[id] = h
	}
	now := e.now()
	was := h.down(now)
	change(p, h, now)
	is := h.down(now)
	if was && !is {
		h.upSince = now
	}
	if was != is {
		e.rebuildLocked(now)
	}
	return is
}

// rebuildLocked rebuilds the host sets of the configuration in force;
// called with e.mu held.
func (e *Engine) rebuildLocked(now time.Time) { e.swapLocked(e.rebuilt(e.snap.Load(), now)) }

// rebuilt is s with every pool's host sets built from its source list, with
// the operator's overrides applied and minus the hosts the service holds
// down; called with e.mu held.
func (e *Engine) rebuilt(s *Snapshot, now time.Time) *Snapshot {
	if !e.needsRebuild() {
		return s
	}
	c := *s
	c.Pools = make([]*Pool, len(s.Pools))
	c.byName = make(map[string]*Pool, len(s.Pools))
	c.healthExpiry = time.Time{}
	for i, p := range s.Pools {
		q := *p
		q.setHosts(e.healthy(p.Name, e.overridden(p.Name, p.Specs), now, &c.healthExpiry))
		c.Pools[i] = &q
		c.byName[q.Name] = &q
	}
	return &c
}

// healthy filters the hosts the service holds down out of specs, noting in
// expiry the earliest time a passive hold ends.
func (e *Engine) healthy(pool string, specs []HostSpec, now time.Time, expiry *time.Time) []HostSpec {
	hosts := e.hostHealth[pool]
	if len(hosts) == 0 {
		return specs
	}
	out := make([]HostSpec, 0, len(specs))
	for _, spec := range specs {
		h := hosts[NewHost(spec.Name, spec.Address, 1).ID]
		if h != nil && h.down(now) {
			if !h.activeDown && (expiry.IsZero() || h.until.Before(*expiry)) {
				*expiry = h.until
			}
			continue
		}
		out = append(out, spec)
	}
	return out
}

// expireHealth brings back hosts whose passive hold has ended.
func (e *Engine) expireHealth(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.snap.Load(); !s.healthExpiry.IsZero() && !now.Before(s.healthExpiry) {
		for _, hosts := range e.hostHealth {
			for _, h := range hosts {
				if !h.activeDown && !h.until.IsZero() && !now.Before(h.until) {
					h.until = time.Time{}
					h.upSince = now
				}
			}
		}
		e.rebuildLocked(now)
	}
}
