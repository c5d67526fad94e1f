package affinity

import (
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Engine makes decisions against the configuration in force. It is safe for
// concurrent use; Update swaps the configuration atomically.
type Engine struct {
	snap  atomic.Pointer[Snapshot]
	now   func() time.Time
	store Store
	// established caches the decisions of established sessions by their
	// token (opaque mode).
	established *lru.Cache[string, establishedEntry]
	// mu orders writers (Update, SetHosts); readers only load snap.
	mu sync.Mutex
	// discovered holds each discovered pool's latest good host list, so
	// that a configuration reload keeps it.
	discovered map[string][]HostSpec
	// hostHealth is the service's own health view, by pool and host ID.
	hostHealth map[string]map[string]*hostHealth
	// operatorStates are the operator's runtime host states (drains and
	// undrains through the admin API), by pool and host ID.
	operatorStates map[string]map[string]OperatorState
	// loadReadings are each pool's latest load reading (under mu);
	// loadViews the same indexed for decisions, swapped whole.
	loadReadings map[string]loadReading
	loadViews    atomic.Pointer[map[string]*loadView]
	// onChange hears of every configuration put in force (nil: none).
	onChange func(before, after *Snapshot)
	// unknownPool counts requests no pool took (passed through untouched).
	unknownPool atomic.Uint64
	// passiveRefused counts passive holds refused by the pool's cap.
	passiveRefused atomic.Uint64
}

// ActiveSessions returns the pool's active sessions per host ID, as the
// store counts them.
func (e *Engine) ActiveSessions(pool string, now time.Time) map[string]int {
	load := map[string]int{}
	e.store.Load(pool, now, load)
	return load
}

// UnknownPoolRequests is how many requests no pool took.
func (e *Engine) UnknownPoolRequests() uint64 { return e.unknownPool.Load() }

// NewEngine returns an engine deciding with s, tracking sessions in a
// MemoryStore sized by s. now is the clock (time.Now when nil).
func NewEngine(s *Snapshot, now func() time.Time) *Engine {
	if now == nil {
		now = time.Now
	}
	max := s.MaxSessions
	if max <= 0 {
		max = DefaultMaxSessions
	}
	e := &Engine{now: now, store: NewMemoryStore(max, s.IdleTimeout())}
	e.established, _ = lru.New[string, establishedEntry](EstablishedCacheSize)
	e.snap.Store(s)
	return e
}

// EstablishedCacheSize is how many established sessions' decisions the engine
// keeps, so that a session's every request (opaque mode) does not verify a
// signature again: Ed25519 verification costs about 40 µs, a cache hit well
// under one.
const EstablishedCacheSize = 65536

// establishedEntry is a verified token and the decision it led to under one
// configuration. The token itself is the key, compared in full, so only the
// very token that was verified hits.
type establishedEntry struct {
	snap         *Snapshot
	pool         *Pool
	expires      time.Time
	hosts        []string // shared by the decisions it serves; never written
	overrideList string   // hosts joined
	hostID       string
	session      string
	tracking     bool // bounded loads count the session on each request
	// envelope: the token came in an upstream session header (session is
	// the value it restores), not in the cookie.
	envelope bool
}

// SetStore replaces the session store (before the engine is used).
func (e *Engine) SetStore(s Store) { e.store = s }

// OnChange sets a function called with the configuration in force before
// and after each change (a reload, a discovery answer, a health or
// operator change of a host), in order, with the engine's lock held: it
// must be quick and must not call back into the engine's writers. Set it
// before the engine is used.
func (e *Engine) OnChange(f func(before, after *Snapshot)) { e.onChange = f }

// Snapshot returns the configuration in force.
func (e *Engine) Snapshot() *Snapshot { return e.snap.Load() }

// Now is the engine's clock.
func (e *Engine) Now() time.Time { return e.now() }
