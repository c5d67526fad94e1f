package affinity

// The host-set pipeline: how a pool's hosts in force are built, in one
// place. Each change (a reload, a discovery answer, a health verdict, an
// operator's drain) runs the same steps and swaps the snapshot once:
//
//	the listed hosts (config file or latest discovery answer)
//	  → the operator's drains and undrains   (overridden)
//	  → minus the hosts held down by health  (healthy)
//	  → the host sets decisions read          (setHosts: all, active, draining)
//
// so a request never sees new hosts without the health view and the
// operator's states applied.

import "time"

// setHosts builds the pool's host sets from specs.
func (p *Pool) setHosts(specs []HostSpec) {
	if p.Specs == nil {
		p.Specs = specs
	}
	hosts := make([]Host, len(specs))
	var active []Host
	draining := map[string]time.Time{}
	for i, h := range specs {
		hosts[i] = NewHost(h.Name, h.Address, h.Weight)
		if !h.DrainingUntil.IsZero() {
			draining[hosts[i].ID] = h.DrainingUntil
		} else {
			active = append(active, hosts[i])
		}
	}
	p.Hosts, p.Active, p.Draining = NewHostSet(hosts), NewHostSet(active), draining
}

// Update puts a new configuration in force for every later decision. Pools
// whose hosts come from discovery keep the hosts last discovered.
func (e *Engine) Update(s *Snapshot) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.store.(IdleSetter); ok {
		m.SetIdle(s.IdleTimeout())
	}
	for i, p := range s.Pools {
		if specs, ok := e.discovered[p.Name]; ok && p.Discovery != nil {
			s = s.withPool(i, specs)
		}
	}
	// One swap: a request never sees the new hosts without the service's
	// health view and the operator's overrides applied.
	e.swapLocked(e.rebuilt(s, e.now()))
}

// SetHosts puts a discovery source's view of a pool's hosts in force.
func (e *Engine) SetHosts(pool string, specs []HostSpec) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.discovered == nil {
		e.discovered = map[string][]HostSpec{}
	}
	e.discovered[pool] = specs
	s := e.snap.Load()
	for i, p := range s.Pools {
		if p.Name == pool && p.Discovery != nil {
			e.swapLocked(e.rebuilt(s.withPool(i, specs), e.now()))
			return
		}
	}
}

// swapLocked puts s in force; called with e.mu held.
func (e *Engine) swapLocked(s *Snapshot) {
	before := e.snap.Swap(s)
	e.rebuildLoadLocked(s)
	if e.onChange != nil && before != nil {
		e.onChange(before, s)
	}
}

// withPool returns a copy of the snapshot whose i-th pool has the given hosts.
func (s *Snapshot) withPool(i int, specs []HostSpec) *Snapshot {
	c := *s
	c.Pools = append([]*Pool(nil), s.Pools...)
	p := *s.Pools[i]
	p.Specs = specs
	p.setHosts(specs)
	c.Pools[i] = &p
	c.byName = make(map[string]*Pool, len(c.Pools))
	for _, q := range c.Pools {
		c.byName[q.Name] = q
	}
	return &c
}

// rebuildLocked rebuilds the host sets of the configuration in force;
// called with e.mu held.
func (e *Engine) rebuildLocked(now time.Time) { e.swapLocked(e.rebuilt(e.snap.Load(), now)) }

// rebuilt is s with every pool's host sets built from its listed hosts, with
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
		q.setHosts(e.healthy(p.Name, e.withOperatorStates(p.Name, p.Specs), now, &c.healthExpiry))
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

// overridden applies the pool's runtime overrides to specs (a copy when any
// applies).
func (e *Engine) withOperatorStates(pool string, specs []HostSpec) []HostSpec {
	ov := e.operatorStates[pool]
	if len(ov) == 0 {
		return specs
	}
	out := make([]HostSpec, len(specs))
	for i, s := range specs {
		if o, ok := ov[NewHost(s.Name, s.Address, 1).ID]; ok {
			s.DrainingUntil = time.Time{}
			if o.Draining {
				s.DrainingUntil = o.Deadline
			}
		}
		out[i] = s
	}
	return out
}

// needsRebuild reports whether host sets differ from their listed hosts:
// the service holds a host down or an operator overrides one.
func (e *Engine) needsRebuild() bool { return len(e.hostHealth) > 0 || len(e.operatorStates) > 0 }
