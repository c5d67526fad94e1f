package affinity

import "time"

// The load signal: each host's requests in flight, as the Envoys in front of
// a pool count them, read in the background (internal/runner) and handed to
// the engine with SetLoad. Decisions read it lock-free: the engine keeps one
// immutable view per pool, indexed like the pool's placement host set, and
// swaps the whole map when a reading arrives or the hosts change.

// loadView is a pool's latest reading, indexed for placement.
type loadView struct {
	// set is the placement host set load is indexed by; a decision that
	// sees another set (the hosts changed a moment ago) places without it.
	set *HostSet
	// load holds each host's requests in flight, by index in set; a host
	// the reading lacks counts 0.
	load []float64
	// mean is load's mean over set.
	mean float64
	// byAddress and at are the reading as it came (shared, never written).
	byAddress map[string]float64
	at        time.Time
}

// loadReading is a reading as SetLoad received it.
type loadReading struct {
	byAddress map[string]float64
	at        time.Time
}

// SetLoad puts a pool's reading of its hosts' requests in flight in force:
// byAddress maps ip:port to the count (the sum over the pool's Envoys),
// read at at. The engine keeps byAddress; the caller must not change it.
// A pool without a load block ignores it.
func (e *Engine) SetLoad(pool string, byAddress map[string]float64, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.loadReadings == nil {
		e.loadReadings = map[string]loadReading{}
	}
	e.loadReadings[pool] = loadReading{byAddress: byAddress, at: at}
	e.rebuildLoadLocked(e.snap.Load())
}

// rebuildLoadLocked indexes the readings of s's pools that have a load
// block by their placement host sets, and drops those of other pools;
// called with e.mu held, after every change of the snapshot.
func (e *Engine) rebuildLoadLocked(s *Snapshot) {
	if len(e.loadReadings) == 0 {
		return
	}
	views := map[string]*loadView{}
	for _, p := range s.Pools {
		r, ok := e.loadReadings[p.Name]
		if !ok || p.Load == nil {
			continue
		}
		set := p.placement()
		v := &loadView{set: set, load: make([]float64, set.Len()), byAddress: r.byAddress, at: r.at}
		total := 0.0
		for i, h := range set.hosts {
			v.load[i] = r.byAddress[h.Address]
			total += v.load[i]
		}
		if set.Len() > 0 {
			v.mean = total / float64(set.Len())
		}
		views[p.Name] = v
	}
	for name := range e.loadReadings {
		if _, ok := views[name]; !ok {
			delete(e.loadReadings, name)
		}
	}
	e.loadViews.Store(&views)
}

// view is the pool's latest load view (nil: none).
func (e *Engine) view(pool string) *loadView {
	m := e.loadViews.Load()
	if m == nil {
		return nil
	}
	return (*m)[pool]
}

// freshLoad is the view to place the pool's new sessions on hosts by: nil
// when the pool has no load block, no reading newer than its stale_after,
// or one of another host set.
func (e *Engine) freshLoad(pool *Pool, hosts *HostSet, now time.Time) *loadView {
	if pool.Load == nil {
		return nil
	}
	v := e.view(pool.Name)
	if v == nil || v.set != hosts || now.Sub(v.at) > pool.Load.StaleAfter {
		return nil
	}
	return v
}

// HostLoad is the pool's latest reading of its hosts' requests in flight,
// by ip:port, and when it was read; false when there is none (or the pool
// has no load block). The map is shared: do not change it.
func (e *Engine) HostLoad(pool string) (map[string]float64, time.Time, bool) {
	v := e.view(pool)
	if v == nil {
		return nil, time.Time{}, false
	}
	return v.byAddress, v.at, true
}

// LoadFresh tells whether the pool's new sessions are placed by load now:
// it has a load block and a reading newer than its stale_after.
func (e *Engine) LoadFresh(pool string, now time.Time) bool {
	p, ok := e.snap.Load().Pool(pool, "")
	return ok && e.freshLoad(p, p.placement(), now) != nil
}
