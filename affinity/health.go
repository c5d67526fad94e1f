package affinity

import (
	"time"
)

// hostHealth is one host's state in the service's own health view.
type hostHealth struct {
	activeDown bool      // the active check failed
	until      time.Time // passive: down until then
	backoff    time.Duration
	upSince    time.Time
	fails      []time.Time // recent 5xx answers
}

func (h *hostHealth) down(now time.Time) bool { return h.activeDown || now.Before(h.until) }

// markDown records a passive failure of the host at served (ip:port) of the
// pool: it is down for its backoff, which doubles each time, unless the
// pool already has as many hosts held down passively as it allows. It
// reports whether the host is now down.
func (e *Engine) markDown(pool, served string) bool {
	return e.health(pool, served, func(p *Pool, h *hostHealth, now time.Time) {
		if !e.passiveRoom(p, h, now) {
			return
		}
		ph := p.Health.Passive
		switch {
		case h.backoff == 0 || now.Sub(h.upSince) >= ph.MaxBackoff && !h.down(now):
			h.backoff = ph.Backoff
		case !h.down(now):
			h.backoff = min(2*h.backoff, ph.MaxBackoff)
		}
		h.until = now.Add(h.backoff)
		h.fails = h.fails[:0]
	}, func(p *Pool) bool { return p.Health.Passive != nil })
}

// count5xx records a 5xx answer of the host at served; enough of them
// within the window mark it down (passive health).
func (e *Engine) count5xx(pool, served string) bool {
	return e.health(pool, served, func(p *Pool, h *hostHealth, now time.Time) {
		ph := p.Health.Passive
		keep := h.fails[:0]
		for _, t := range h.fails {
			if now.Sub(t) < ph.Window {
				keep = append(keep, t)
			}
		}
		h.fails = append(keep, now)
		if len(h.fails) >= ph.Status5xx && e.passiveRoom(p, h, now) {
			if !h.down(now) {
				h.backoff = min(max(2*h.backoff, ph.Backoff), ph.MaxBackoff)
			}
			h.until = now.Add(h.backoff)
			h.fails = h.fails[:0]
		}
	}, func(p *Pool) bool {
		return p.Health.Passive != nil && p.Health.Passive.Status5xx > 0
	})
}

// passiveRoom reports whether passive signals may hold h down: it is down
// already, or fewer of the pool's hosts than MaxDownPercent (at least one)
// are held down passively now. A refused hold is counted. It runs under
// the writer lock.
func (e *Engine) passiveRoom(p *Pool, h *hostHealth, now time.Time) bool {
	if now.Before(h.until) {
		return true
	}
	held := 0
	for _, o := range e.hostHealth[p.Name] {
		if now.Before(o.until) {
			held++
		}
	}
	if held < max(1, len(p.Specs)*p.Health.Passive.MaxDownPercent/100) {
		return true
	}
	e.passiveRefused.Add(1)
	return false
}

// PassiveHoldsRefused is how many passive holds the cap refused.
func (e *Engine) PassiveHoldsRefused() uint64 { return e.passiveRefused.Load() }

// SetActiveHealth records the active check's verdict on the host at addr.
func (e *Engine) SetActiveHealth(pool, addr string, healthy bool) {
	e.health(pool, addr, func(_ *Pool, h *hostHealth, _ time.Time) { h.activeDown = !healthy },
		func(p *Pool) bool { return p.Health.Active != nil })
}

// health changes one host's health under the writer lock and, when the
// host's up/down state changed, rebuilds the pool's host sets.
func (e *Engine) health(pool, addr string, change func(*Pool, *hostHealth, time.Time), enabled func(*Pool) bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.snap.Load()
	p, ok := s.byName[pool]
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
