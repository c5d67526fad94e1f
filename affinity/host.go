package affinity

import (
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Host is one upstream endpoint of a pool.
type Host struct {
	// ID is the stable, opaque reference to the host that session tokens
	// carry: the configured name, or a digest of the address when there is
	// none. It never reveals the address by itself.
	ID string
	// Address is the host's ip:port as Envoy's cluster knows it.
	Address string
	// Weight scales the host's share of new sessions (1 when unset).
	Weight uint32

	// seed is the hash of ID, mixed with each key's hash for placement.
	seed uint64
}

// NewHost returns a host with its placement seed computed. An empty name
// derives the ID from the address, so every replica derives the same one.
func NewHost(name, address string, weight uint32) Host {
	id := name
	if id == "" {
		id = "h" + strconv.FormatUint(xxhash.Sum64String(address), 36)
	}
	if weight == 0 {
		weight = 1
	}
	return Host{ID: id, Address: address, Weight: weight, seed: xxhash.Sum64String(id)}
}

// HostSet is an immutable snapshot of a pool's hosts with its placement.
// It is built once per configuration change and read concurrently.
type HostSet struct {
	hosts  []Host
	byID   map[string]int
	byAddr map[string]int
	place  *Rendezvous
}

// NewHostSet builds a snapshot. IDs must be unique (the config validates it).
func NewHostSet(hosts []Host) *HostSet {
	s := &HostSet{hosts: append([]Host(nil), hosts...), byID: make(map[string]int, len(hosts)), byAddr: make(map[string]int, len(hosts))}
	for i, h := range s.hosts {
		s.byID[h.ID] = i
		s.byAddr[h.Address] = i
	}
	s.place = NewRendezvous(s.hosts)
	return s
}

// Len is the number of hosts.
func (s *HostSet) Len() int { return len(s.hosts) }

// Hosts returns a copy of the hosts in configuration order.
func (s *HostSet) Hosts() []Host { return append([]Host(nil), s.hosts...) }

// Lookup returns the host with the given ID.
func (s *HostSet) Lookup(id string) (Host, bool) {
	i, ok := s.byID[id]
	if !ok {
		return Host{}, false
	}
	return s.hosts[i], true
}

// LookupAddress returns the host with the given ip:port.
func (s *HostSet) LookupAddress(addr string) (Host, bool) {
	i, ok := s.byAddr[addr]
	if !ok {
		return Host{}, false
	}
	return s.hosts[i], true
}

// Rank writes into dst the indexes of the key's first len(dst) choices, best
// first, and returns how many it wrote (fewer when the set is smaller).
func (s *HostSet) Rank(key uint64, dst []int) int { return s.place.Rank(key, dst) }

// At returns the host at index i of the snapshot.
func (s *HostSet) At(i int) Host { return s.hosts[i] }

// Choices returns the session's first n hosts in its placement order: where
// a new session with this id goes, and where it moves, in turn, when hosts
// before it leave. Every replica computes the same list from the same set.
func (s *HostSet) Choices(sessionID string, n int) []Host {
	idx := make([]int, n)
	n = s.Rank(sessionKey(sessionID), idx)
	out := make([]Host, n)
	for i := range out {
		out[i] = s.hosts[idx[i]]
	}
	return out
}

// HostSpec is a host as the config file or a discovery source describes it.
type HostSpec struct {
	Name    string
	Address string
	Weight  uint32
	// DrainingUntil, when set, makes the host draining until then.
	DrainingUntil time.Time
}
