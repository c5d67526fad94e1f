package affinity

import (
	"errors"
	"fmt"
	"maps"
	"time"
)

// OperatorState is an operator's runtime setting of one host's state, on top
// of what the configuration or discovery says. It lasts until it is
// replaced or the host's ID leaves the pool for good.
type OperatorState struct {
	// Draining: the host drains until Deadline. Otherwise the host is
	// active even when its source says it drains (an undrain).
	Draining bool
	Deadline time.Time
}

// Errors of the runtime host overrides.
var (
	ErrUnknownPool = errors.New("no such pool")
	ErrUnknownHost = errors.New("no such host in the pool")
)

// DrainHost drains the pool's host (by ID) until deadline: no new session is
// placed on it, its sessions stay until the deadline and then move to their
// successors, whatever the configuration says about it.
func (e *Engine) DrainHost(pool, id string, deadline time.Time) error {
	return e.setOperatorState(pool, id, OperatorState{Draining: true, Deadline: deadline})
}

// UndrainHost makes the pool's host active again, over a runtime drain or
// one its configuration or source sets.
func (e *Engine) UndrainHost(pool, id string) error {
	return e.setOperatorState(pool, id, OperatorState{})
}

// OperatorStates returns the runtime overrides of the pool's hosts by ID.
func (e *Engine) OperatorStates(pool string) map[string]OperatorState {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]OperatorState, len(e.operatorStates[pool]))
	for id, o := range e.operatorStates[pool] {
		out[id] = o
	}
	return out
}

func (e *Engine) setOperatorState(pool, id string, o OperatorState) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.snap.Load().byName[pool]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownPool, pool)
	}
	found := false
	for _, h := range p.Specs {
		if NewHost(h.Name, h.Address, 1).ID == id {
			found = true
			break
		}
	}
	if !found {
		return fmt.Errorf("%w: %q has no host %q", ErrUnknownHost, pool, id)
	}
	if e.operatorStates == nil {
		e.operatorStates = map[string]map[string]OperatorState{}
	}
	if e.operatorStates[pool] == nil {
		e.operatorStates[pool] = map[string]OperatorState{}
	}
	e.operatorStates[pool][id] = o
	e.rebuildLocked(e.now())
	return nil
}

// SetOperatorStates replaces the runtime overrides of every pool by the
// given ones (the fleet's, read from a shared store). Hosts a pool does not
// have yet are kept, and apply when they appear.
func (e *Engine) SetOperatorStates(states map[string]map[string]OperatorState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := make(map[string]map[string]OperatorState, len(states))
	for pool, hosts := range states {
		next[pool] = maps.Clone(hosts)
	}
	e.operatorStates = next
	e.rebuildLocked(e.now())
}
