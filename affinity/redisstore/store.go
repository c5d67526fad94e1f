// Package redisstore shares what the service remembers beyond the cookie
// among its replicas, in Redis: the host each key that is not our cookie is
// bound to, the active-session counts behind bounded loads, and the
// operator's drains. Cookie sessions never reach Redis: their token is their
// state.
//
// Every replica keeps its own in-memory store beside Redis. It counts the
// sessions this replica sees, mirrors the bindings it uses, and answers alone
// while Redis is unreachable or slower than the configured timeout; the
// bindings made meanwhile are written back when Redis answers again.
//
// Keys, under the configured prefix:
//
//	b:<pool>:<hash of key>  string, the host ID; expires after the idle timeout
//	l:<pool>                hash, replica → "<unix ms> <host>=<n> ..."
//	o                       hash, "<pool>/<host>" → the operator's state (JSON)
package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/redis/rueidis"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// Store is an affinity.Store shared through Redis, with a local fallback.
// Create it with New, run its upkeep with Run, and Close it.
type Store struct {
	cfg     affinity.RedisConfig
	opt     rueidis.ClientOption
	local   *affinity.MemoryStore
	log     *slog.Logger
	replica string

	client atomic.Pointer[rueidis.Client] // nil until the first connection
	shared atomic.Bool                    // false: answering from local
	idle   atomic.Int64                   // nanoseconds

	mu      sync.Mutex
	touched *simplelru.LRU[string, touch] // Redis key → last write from here
	pending map[string]binding            // bound while Redis was unreachable
	others  map[string]map[string]int     // pool → host → sessions of the other replicas
	ops     map[string]operatorWrite      // operator states not yet written
	lastOps map[string]map[string]affinity.OperatorState

	writes chan binding
	wake   chan struct{} // a failure asks the upkeep to probe now
	done   chan struct{}
	closed sync.Once
	wg     sync.WaitGroup

	stats Stats
}

// Stats are the store's counters since it started.
type Stats struct {
	// Reads and Writes are the binding commands requests caused (reads on
	// the request path, writes by the writer); CacheHits the reads
	// answered from the client-side cache; Syncs the commands of the
	// upkeep (count exchange, operator states, write-back).
	Reads, Writes, CacheHits, Syncs atomic.Uint64
	// Errors are the commands that failed or passed the timeout;
	// LocalAnswers the requests answered from the local store instead.
	Errors, LocalAnswers atomic.Uint64
	// Outages counts the changes from shared to local mode.
	Outages atomic.Uint64
	// PendingDropped are bindings made while Redis was unreachable that
	// did not fit in the queue written back after.
	PendingDropped atomic.Uint64
	// Restored are bindings Redis did not have (lost in a restart) that
	// this replica answered from its memory and wrote back.
	Restored atomic.Uint64
}

// touch is what this replica knows of a key in Redis: its host, and when
// it expires there (zero: unknown).
type touch struct {
	host    string
	expires time.Time
}

// binding is one write of a key's binding: a new host; with touchOnly the
// expiry of the host it has; with ifAbsent a host unless the key has one.
type binding struct {
	rkey, pool, key, host string
	at                    time.Time
	touchOnly, ifAbsent   bool
	// unbind deletes the key (its session ended).
	unbind bool
}

// Sizes of the bookkeeping.
const (
	touchedSize = 1 << 18
	maxPending  = 100_000
	writeQueue  = 4096
	writeBatch  = 128
)

// Options tune a Store beyond its configuration.
type Options struct {
	// Replica names this replica in the shared counts (default: a random
	// name; a restarted replica is a new one).
	Replica string
	Logger  *slog.Logger
}

// New returns a Store for cfg in front of local; it connects in the
// background (Run), answering from local until Redis answers. It fails only
// for an unusable configuration (unreadable password or TLS files).
func New(cfg affinity.RedisConfig, local *affinity.MemoryStore, idle time.Duration, o Options) (*Store, error) {
	opt, err := clientOption(cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg: cfg, opt: opt, local: local, log: o.Logger, replica: o.Replica,
		pending: map[string]binding{}, others: map[string]map[string]int{}, ops: map[string]operatorWrite{},
		writes: make(chan binding, writeQueue), wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.replica == "" {
		s.replica = randomName()
	}
	s.touched, _ = simplelru.NewLRU[string, touch](touchedSize, nil)
	s.idle.Store(int64(idle))
	return s, nil
}

// Replica is this replica's name in the shared counts.
func (s *Store) Replica() string { return s.replica }

// Shared reports whether the store answers from Redis now.
func (s *Store) Shared() bool { return s.shared.Load() }

// Counters returns the store's counters.
func (s *Store) Counters() *Stats { return &s.stats }

// SetIdle implements affinity.IdleSetter.
func (s *Store) SetIdle(idle time.Duration) {
	s.idle.Store(int64(idle))
	s.local.SetIdle(idle)
}

// Seen implements affinity.Store: a cookie session is counted here only.
func (s *Store) Seen(pool, sid, host string, now time.Time) { s.local.Seen(pool, sid, host, now) }

// Unseen implements affinity.Store: like Seen, this replica's count only.
func (s *Store) Unseen(pool, sid string) { s.local.Unseen(pool, sid) }

// Load implements affinity.Store: this replica's sessions, and the other
// replicas' as they last published them (at most one sync interval old).
func (s *Store) Load(pool string, now time.Time, dst map[string]int) {
	s.local.Load(pool, now, dst)
	s.mu.Lock()
	for h, n := range s.others[pool] {
		dst[h] += n
	}
	s.mu.Unlock()
}

// Binding implements affinity.Store.
func (s *Store) Binding(pool, key string, now time.Time) (string, bool) {
	c := s.current()
	if c == nil {
		s.stats.LocalAnswers.Add(1)
		return s.local.Binding(pool, key, now)
	}
	rkey := BindingKey(s.cfg.KeyPrefix, pool, key)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	host, found, err := s.get(ctx, c, rkey)
	if err != nil {
		s.failed(err)
		s.stats.LocalAnswers.Add(1)
		return s.local.Binding(pool, key, now)
	}
	if !found {
		return s.restore(pool, key, rkey, now)
	}
	return host, true
}

// restore answers for a key Redis does not have (it lost it, say in a
// restart without persistence) from this replica's memory, and writes it
// back unless another replica binds the key first.
func (s *Store) restore(pool, key, rkey string, now time.Time) (string, bool) {
	host, ok := s.local.Binding(pool, key, now)
	if !ok {
		return "", false
	}
	s.stats.Restored.Add(1)
	select {
	case s.writes <- binding{rkey: rkey, pool: pool, key: key, host: host, at: now, ifAbsent: true}:
	default:
	}
	return host, true
}

// Claim implements affinity.Store: the key's binding in Redis, or a new
// one made with SET NX so that the first replica to bind a key wins. A key
// this replica has used is read through the client-side cache first; a key
// it has not is claimed at once: one round trip either way. A binding found
// reaches this replica's memory with the Bind that keeps it (the engine's
// touch), as with the in-memory store; a new one at once.
func (s *Store) Claim(pool, key string, now time.Time, place func() string) (string, bool) {
	c := s.current()
	if c == nil {
		return s.claimLocal(pool, key, now, place)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	rkey := BindingKey(s.cfg.KeyPrefix, pool, key)
	if _, known := s.local.Binding(pool, key, now); known {
		host, found, err := s.get(ctx, c, rkey)
		switch {
		case err != nil:
			s.failed(err)
			return s.claimLocal(pool, key, now, place)
		case found:
			return host, true
		}
		if host, ok := s.restore(pool, key, rkey, now); ok {
			return host, true
		}
	}
	host := place()
	s.stats.Writes.Add(1)
	// With the key's remaining life in the same round trip, so that an
	// existing binding is not touched again needlessly.
	rs := (*c).DoMulti(ctx, (*c).B().Set().Key(rkey).Value(host).Nx().Get().Px(s.lifetime()).Build(), (*c).B().Pttl().Key(rkey).Build())
	old, err := rs[0].ToString()
	switch {
	case rueidis.IsRedisNil(err):
		s.local.Bind(pool, key, host, now)
		s.noteTouched(rkey, host, now)
		return host, false
	case err != nil:
		s.failed(err)
		return s.claimLocal(pool, key, now, func() string { return host })
	}
	var expires time.Time
	if ms, err := rs[1].AsInt64(); err == nil && ms > 0 {
		expires = now.Add(time.Duration(ms) * time.Millisecond)
	}
	s.noteRead(rkey, old, expires)
	return old, true
}

// claimLocal claims in the local store and remembers a new binding for
// Redis.
func (s *Store) claimLocal(pool, key string, now time.Time, place func() string) (string, bool) {
	s.stats.LocalAnswers.Add(1)
	host, bound := s.local.Claim(pool, key, now, place)
	if !bound {
		s.addPending(binding{rkey: BindingKey(s.cfg.KeyPrefix, pool, key), pool: pool, key: key, host: host, at: now})
	}
	return host, bound
}

// Bind implements affinity.Store, in the background: a host other than the
// one this replica last read or wrote is set at once; the same host has its
// expiry pushed back at most once per touch interval (an expiry only, so
// that a late touch never undoes another replica's re-binding).
func (s *Store) Bind(pool, key, host string, now time.Time) {
	s.local.Bind(pool, key, host, now)
	b := binding{rkey: BindingKey(s.cfg.KeyPrefix, pool, key), pool: pool, key: key, host: host, at: now}
	if s.current() == nil {
		s.addPending(b)
		return
	}
	// A key whose expiry some replica pushed back within the touch
	// interval needs no touch: the fleet touches a key in use about once
	// per interval, and every touch costs each replica's cached copy.
	s.mu.Lock()
	t, ok := s.touched.Get(b.rkey)
	b.touchOnly = ok && t.host == host
	fresh := b.touchOnly && t.expires.Sub(now) >= s.idleTime()
	if !fresh {
		s.touched.Add(b.rkey, touch{host: host, expires: now.Add(s.lifetime())})
	}
	s.mu.Unlock()
	if fresh {
		return
	}
	select {
	case s.writes <- b:
	default:
		// The writer is behind: the binding is local now and written
		// with a later touch.
		s.mu.Lock()
		s.touched.Remove(b.rkey)
		s.mu.Unlock()
	}
}

// Unbind implements affinity.Store: the key is forgotten here at once and
// deleted in Redis by the writer (or when Redis answers again).
func (s *Store) Unbind(pool, key string) {
	s.local.Unbind(pool, key)
	b := binding{rkey: BindingKey(s.cfg.KeyPrefix, pool, key), pool: pool, key: key, unbind: true}
	s.mu.Lock()
	s.touched.Remove(b.rkey)
	s.mu.Unlock()
	if s.current() == nil {
		s.addPending(b)
		return
	}
	select {
	case s.writes <- b:
	default:
		s.addPending(b) // the writer is behind: deleted with the next write-back
	}
}

// get reads a binding through the client-side cache. The cached copy
// lasts until Redis says the key changed (or it expires there), and tells
// when the key expires, so that Bind touches only a key nobody touched.
func (s *Store) get(ctx context.Context, c *rueidis.Client, rkey string) (string, bool, error) {
	r := (*c).DoCache(ctx, (*c).B().Get().Key(rkey).Cache(), s.lifetime())
	if r.IsCacheHit() {
		s.stats.CacheHits.Add(1)
	} else {
		s.stats.Reads.Add(1)
	}
	host, err := r.ToString()
	if rueidis.IsRedisNil(err) {
		return "", false, nil
	}
	if err == nil {
		var expires time.Time
		if ms := r.CachePTTL(); ms > 0 {
			expires = time.Now().Add(time.Duration(ms) * time.Millisecond)
		}
		s.noteRead(rkey, host, expires)
	}
	return host, err == nil, err
}

// noteTouched records a write of rkey from this replica.
func (s *Store) noteTouched(rkey, host string, now time.Time) {
	s.mu.Lock()
	s.touched.Add(rkey, touch{host: host, expires: now.Add(s.lifetime())})
	s.mu.Unlock()
}

// noteRead records the host Redis holds for rkey and when the key expires
// there (zero: unknown); a later Bind to another host is then a change, to
// the same one a touch when the expiry is near enough.
func (s *Store) noteRead(rkey, host string, expires time.Time) {
	s.mu.Lock()
	s.touched.Add(rkey, touch{host: host, expires: expires})
	s.mu.Unlock()
}

// keepPending puts back a binding that failed to be written, unless a
// newer one for the key came meanwhile.
func (s *Store) keepPending(b binding) {
	s.mu.Lock()
	_, newer := s.pending[b.rkey]
	s.mu.Unlock()
	if !newer {
		s.addPending(b)
	}
}

func (s *Store) addPending(b binding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pending[b.rkey]; !ok && len(s.pending) >= maxPending {
		s.stats.PendingDropped.Add(1)
		return
	}
	s.pending[b.rkey] = b
}

// current is the client when the store is in shared mode, else nil.
func (s *Store) current() *rueidis.Client {
	if !s.shared.Load() {
		return nil
	}
	return s.client.Load()
}

// failed counts a failed command and asks the upkeep to probe Redis now.
// A single server (or Sentinel's master) that fails is down for every key:
// the store answers locally at once. In a Cluster one node's keys may fail
// while the others answer, so only a failed probe of every node does.
func (s *Store) failed(err error) {
	s.stats.Errors.Add(1)
	if s.cfg.Mode != affinity.RedisCluster {
		s.toLocal(err)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// toLocal switches to answering from the local store, logging the change.
func (s *Store) toLocal(err error) {
	if s.shared.CompareAndSwap(true, false) {
		s.stats.Outages.Add(1)
		s.log.Warn("redis unreachable: answering from this replica's memory until it is back", "err", err)
	}
}

func (s *Store) idleTime() time.Duration { return time.Duration(s.idle.Load()) }

// lifetime is how long a binding lives in Redis after a write or a touch:
// the idle timeout plus the touch interval, so that a key used at any time
// since its last touch still has the idle timeout ahead of it.
func (s *Store) lifetime() time.Duration { return s.idleTime() + s.cfg.TouchInterval }

// BindingKey is the Redis key of a key's binding: a hash of the key, so
// that application cookies and other identifiers are not stored as such.
// key is as the engine names it, its source's prefix first ("h:" for a
// header, "c:" for an application cookie, "q:" query, "a:" client address).
func BindingKey(prefix, pool, key string) string {
	sum := sha256.Sum256([]byte(key))
	return prefix + "b:" + pool + ":" + base64.RawURLEncoding.EncodeToString(sum[:16])
}

// Close stops the upkeep and the writer and closes the connections.
func (s *Store) Close() {
	s.closed.Do(func() {
		close(s.done)
		s.wg.Wait()
		if c := s.client.Load(); c != nil {
			(*c).Close()
		}
	})
}

var _ affinity.Store = (*Store)(nil)
