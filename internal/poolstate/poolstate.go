// Package poolstate describes a pool as an operator sees it: each host its
// discovery lists, with the host's state (active, draining, or down), and
// how reading the pool's discovery goes. The admin API, the metrics and the
// host-change log all report from it, so that they name states alike.
package poolstate

import (
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// The states of a host.
const (
	// Active: new sessions may be placed on the host.
	Active = "active"
	// Draining: the host keeps its sessions until a deadline, takes no new ones.
	Draining = "draining"
	// Down: the service's own health probes hold the host down, though its
	// discovery still lists it.
	Down = "down"
)

// Host is a host of a pool's discovery list and its state.
type Host struct {
	affinity.Host
	State string // Active, Draining or Down
	// Until is when a draining host's drain ends.
	Until time.Time
}

// Hosts lists the pool's hosts as its discovery lists them, so that hosts
// the service's health probes hold down show too.
func Hosts(p *affinity.Pool) []Host {
	out := make([]Host, 0, len(p.Specs))
	for _, spec := range p.Specs {
		h := Host{Host: affinity.NewHost(spec.Name, spec.Address, spec.Weight), State: Active}
		if _, in := p.Hosts.Lookup(h.ID); !in {
			h.State = Down
		} else if d, ok := p.Draining[h.ID]; ok {
			h.State, h.Until = Draining, d
		}
		out = append(out, h)
	}
	return out
}

// Discovery is how reading a pool's hosts goes.
type Discovery struct {
	// Kind is the discovery's kind, as the configuration names it ("envoy",
	// "dns").
	Kind string
	// Refreshes and Errors count good reads, and failed or empty ones.
	Refreshes, Errors uint64
	// LastRefresh is the time of the last good read (zero before the first).
	LastRefresh time.Time
}

// Load is how reading a pool's load (its hosts' requests in flight) goes.
type Load struct {
	// Reads and Errors count the Envoy admin APIs that answered, and
	// those that did not (each Envoy of each round).
	Reads, Errors uint64
}
