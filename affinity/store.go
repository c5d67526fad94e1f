package affinity

import (
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Store is what the service remembers beyond the cookie: which sessions are
// active on which host, and which host each key that is not our cookie
// (a header, a query parameter, a client address, a learned application
// cookie) is bound to. Decisions read and write it only through this
// interface, so that a store shared by several replicas can take the place of
// the in-memory one; nothing else may assume the state is local.
type Store interface {
	// Seen records that cookie session sid of pool was active on host at
	// now. It only counts the session for bounded loads: a cookie session's
	// binding is its token, so a shared store keeps Seen local.
	Seen(pool, sid, host string, now time.Time)
	// Unseen uncounts a session Seen counted that did not start: the
	// placement of a request whose session the upstream names in its
	// response, counted until the response says under what key. Local,
	// like Seen.
	Unseen(pool, sid string)
	// Load adds to dst, per host ID, the sessions of pool active at now:
	// seen within the store's idle timeout.
	Load(pool string, now time.Time, dst map[string]int)
	// Binding returns the host a key of pool is bound to, if it was used
	// within the idle timeout. It changes nothing.
	Binding(pool, key string, now time.Time) (host string, ok bool)
	// Claim returns the host a key of pool is bound to; when it has none,
	// it binds the key to place() and reports bound false. A shared store
	// makes the first claim of a key win across replicas.
	Claim(pool, key string, now time.Time, place func() string) (host string, bound bool)
	// Bind binds a key of pool to host at now (a re-binding, a learned
	// application cookie, or the touch of a binding in use).
	Bind(pool, key, host string, now time.Time)
	// Unbind forgets a key of pool (the session it names ended).
	Unbind(pool, key string)
}

// IdleSetter is a Store whose idle timeout follows the configuration.
type IdleSetter interface {
	SetIdle(idle time.Duration)
}

// DefaultMaxSessions is how many sessions the in-memory store tracks.
const DefaultMaxSessions = 1_000_000

// MemoryStore is the bounded in-memory Store: an LRU of sessions by last
// activity with a count per pool and host kept beside it. Sessions idle
// longer than the idle timeout, and the least recently active ones beyond
// the size, are dropped (and uncounted).
type MemoryStore struct {
	mu     sync.Mutex
	idle   time.Duration
	lru    *simplelru.LRU[memKey, memEntry]
	counts map[string]map[string]int // pool → host ID → active sessions
}

// memKey names a session: 64-bit hashes of its id and of its pool. Ids are
// 128 random bits, so hash collisions among a million sessions are
// vanishingly rare (about 1 in 10^7), and a collision only miscounts one.
type memKey struct{ sid, pool uint64 }

type memEntry struct {
	pool, host string // shared with the configuration's strings, not copied
	seen       int64  // unix nanoseconds
}

// NewMemoryStore tracks up to max sessions, each active for idle after it
// was last seen.
func NewMemoryStore(max int, idle time.Duration) *MemoryStore {
	s := &MemoryStore{idle: idle, counts: map[string]map[string]int{}}
	s.lru, _ = simplelru.NewLRU(max, s.evicted) // max > 0 is the caller's to ensure
	return s
}

// SetIdle changes the idle timeout (a configuration reload).
func (s *MemoryStore) SetIdle(idle time.Duration) {
	s.mu.Lock()
	s.idle = idle
	s.mu.Unlock()
}

// evicted uncounts a session the LRU dropped; the LRU calls it under s.mu.
func (s *MemoryStore) evicted(_ memKey, e memEntry) {
	if hosts := s.counts[e.pool]; hosts != nil {
		if hosts[e.host]--; hosts[e.host] <= 0 {
			delete(hosts, e.host)
		}
	}
}

// Seen implements Store.
func (s *MemoryStore) Seen(pool, sid, host string, now time.Time) {
	k := memKey{sid: xxhash.Sum64String(sid), pool: xxhash.Sum64String(pool)}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.lru.Peek(k)
	if ok && old.host != host {
		s.lru.Remove(k) // uncounts it on its old host
		ok = false
	}
	if !ok {
		s.count(pool, host)
	}
	s.lru.Add(k, memEntry{pool: pool, host: host, seen: now.UnixNano()})
	s.expire(now)
}

func (s *MemoryStore) count(pool, host string) {
	hosts := s.counts[pool]
	if hosts == nil {
		hosts = map[string]int{}
		s.counts[pool] = hosts
	}
	hosts[host]++
}

// expire drops the sessions idle for longer than the timeout; the LRU's
// oldest entry is the least recently seen.
func (s *MemoryStore) expire(now time.Time) {
	limit := now.Add(-s.idle).UnixNano()
	for {
		_, e, ok := s.lru.GetOldest()
		if !ok || e.seen >= limit {
			return
		}
		s.lru.RemoveOldest()
	}
}

// Load implements Store.
func (s *MemoryStore) Load(pool string, now time.Time, dst map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	for h, n := range s.counts[pool] {
		dst[h] += n
	}
}

// Binding implements Store.
func (s *MemoryStore) Binding(pool, key string, now time.Time) (string, bool) {
	k := memKey{sid: xxhash.Sum64String(key), pool: xxhash.Sum64String(pool)}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lru.Peek(k)
	if !ok || e.seen < now.Add(-s.idle).UnixNano() {
		return "", false
	}
	return e.host, true
}

// Claim implements Store.
func (s *MemoryStore) Claim(pool, key string, now time.Time, place func() string) (string, bool) {
	if host, ok := s.Binding(pool, key, now); ok {
		return host, true
	}
	host := place()
	s.Seen(pool, key, host, now)
	return host, false
}

// Bind implements Store: in memory, a key is tracked as a session is.
func (s *MemoryStore) Bind(pool, key, host string, now time.Time) { s.Seen(pool, key, host, now) }

// Unbind implements Store: the key is forgotten and uncounted.
func (s *MemoryStore) Unbind(pool, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lru.Remove(memKey{sid: xxhash.Sum64String(key), pool: xxhash.Sum64String(pool)})
}

// Unseen implements Store: the session is forgotten and uncounted.
func (s *MemoryStore) Unseen(pool, sid string) { s.Unbind(pool, sid) }

// Len is the number of tracked sessions.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

var _ Store = (*MemoryStore)(nil)
