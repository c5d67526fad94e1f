package affinity

import (
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	lru "github.com/hashicorp/golang-lru/v2"
)

// OverrideHosts is how many hosts a decision lists by default: the primary
// and the successor an Envoy retry goes to when the primary cannot be
// reached. A pool may list up to MaxRank.
const OverrideHosts = 2

// Mode is how a pool's sessions are enforced.
type Mode string

// Modes.
const (
	// ModeVerified: the token names "primary,successor" as ip:port; Envoy's
	// jwt_authn verifies it and routes by it without asking the service.
	// The service sees new, expired, invalid and re-bound sessions only.
	ModeVerified Mode = "verified"
	// ModeOpaque: the token names the host by an opaque id; the service is
	// asked on every request.
	ModeOpaque Mode = "opaque"
	// ModeNative: Envoy's own stateful_session cookie pins sessions; the
	// service only places new ones and writes no cookie.
	ModeNative Mode = "native"
)

// Pool is a configured pool in force: its cookie, lifetimes and hosts.
type Pool struct {
	Name            string
	Mode            Mode
	Strict          bool
	Cookie          CookieSpec
	AbsoluteTimeout time.Duration
	RefreshInterval time.Duration
	IdleTimeout     time.Duration
	// LoadFactor c caps new placements at ⌈c × mean⌉ active sessions per
	// host; 0 is no cap.
	LoadFactor float64
	// KeySources are tried in order; the first with a key wins.
	KeySources []KeySourceSpec
	// ReboundHeader and SuccessorHeader name the request headers that tell
	// the application about re-binds and successors ("" = off).
	ReboundHeader, SuccessorHeader string
	// Output names the request headers decisions are also written to.
	Output OutputHeaders
	// OverrideHosts is the length of the override list (primary first).
	OverrideHosts int
	// MatchAll: the pool's name was left out, so it takes requests of every
	// cluster (a configuration with a single pool).
	MatchAll bool
	// Discovery is the pool's host source (nil: the hosts of the file).
	Discovery *DiscoveryConfig
	// Health is the service's own health checking (nil: off).
	Health *HealthConfig
	// Specs are the hosts as the source lists them, before the service's
	// health view takes any out.
	Specs []HostSpec
	// Hosts are all the pool's hosts, draining ones included: a session
	// bound to any of them is recognised.
	Hosts *HostSet
	// Active are the hosts new sessions are placed on, and the successor
	// order draws from.
	Active *HostSet
	// Draining maps the ID of each draining host to its deadline.
	Draining map[string]time.Time
}

// OutputHeaders names the request headers a pool's decisions are written to
// besides the envoy.lb metadata ("" = not written).
type OutputHeaders struct {
	// Header carries the override list "ip:port,ip:port", primary first
	// (Envoy's override_host policy with a header source).
	Header string
	// StatefulSession carries base64 of the primary's "ip:port" (Envoy's
	// stateful_session filter with header session state).
	StatefulSession string
}

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

// source returns the pool's source of the given type.
func (p *Pool) source(t KeySource) (*KeySourceSpec, bool) {
	for i := range p.KeySources {
		if p.KeySources[i].Type == t {
			return &p.KeySources[i], true
		}
	}
	return nil, false
}

// placement is the host set new and re-bound sessions are placed on: the
// active hosts, or all of them when every host is draining (a session on a
// draining host beats no session).
func (p *Pool) placement() *HostSet {
	if p.Active.Len() > 0 {
		return p.Active
	}
	return p.Hosts
}

// Snapshot is one configuration in force: immutable, swapped whole.
type Snapshot struct {
	Pools []*Pool
	Codec *TokenCodec
	// MaxSessions sizes the in-memory store (read when the engine starts).
	MaxSessions int
	byName      map[string]*Pool
	// outputHeaders are the output headers of every pool: a request no
	// pool takes has the client's copies removed.
	outputHeaders []string
	// healthExpiry is when the first passive health hold ends (zero: none).
	healthExpiry time.Time
}

// idleTimeout is the longest idle timeout of the pools: how long the store
// keeps a session counted.
func (s *Snapshot) idleTimeout() time.Duration {
	var d time.Duration
	for _, p := range s.Pools {
		d = max(d, p.IdleTimeout)
	}
	return max(d, time.Second)
}

// Pool returns the pool for a request: the pool named by name (Envoy's
// grpc_service initial_metadata) if given, else the pool named like the
// request's Envoy cluster, else a pool configured without a name (which
// takes every cluster).
func (s *Snapshot) Pool(name, cluster string) (*Pool, bool) {
	if name != "" {
		p, ok := s.byName[name]
		return p, ok
	}
	if p, ok := s.byName[cluster]; ok {
		return p, true
	}
	if len(s.Pools) == 1 && s.Pools[0].MatchAll {
		return s.Pools[0], true
	}
	return nil, false
}

// Outcome says what a decision did with the session.
type Outcome uint8

// Outcomes.
const (
	// OutcomePassThrough: no pool or no host for the request; Envoy's own
	// load balancer picks.
	OutcomePassThrough Outcome = iota
	// OutcomePinned: the session stays on its host (its cookie may be
	// refreshed).
	OutcomePinned
	// OutcomeNew: a new session was placed.
	OutcomeNew
	// OutcomeRebound: the session keeps its id but moves to another host.
	OutcomeRebound
	// OutcomeRejected: the session's host is gone and the pool is strict;
	// the request is answered with Decision.Status.
	OutcomeRejected
)

var outcomeNames = [...]string{"pass-through", "pinned", "new", "rebound", "rejected"}

func (o Outcome) String() string { return outcomeNames[o] }

// Reason says why a session is new, re-bound or refreshed.
type Reason uint8

// Reasons.
const (
	ReasonNone Reason = iota
	// ReasonNoCookie: the request carried no session cookie.
	ReasonNoCookie
	// ReasonInvalidCookie: the cookie was malformed, forged, signed by an
	// unknown key or too long.
	ReasonInvalidCookie
	// ReasonExpired: the token's exp passed. Within the absolute timeout
	// the session is refreshed, after it a new one starts.
	ReasonExpired
	// ReasonHostLeft: the session's host is no longer in the pool.
	ReasonHostLeft
	// ReasonNoPool: no pool serves the request's cluster.
	ReasonNoPool
	// ReasonNoHosts: the pool has no host.
	ReasonNoHosts
	// ReasonUnverified: in verified mode, a valid token reached the service,
	// so Envoy could not use it (its key not fetched yet, or clocks apart);
	// it is re-issued.
	ReasonUnverified
	// ReasonDraining: the session's host was draining and its deadline passed.
	ReasonDraining
	// ReasonIdle: the session was idle for longer than its idle timeout.
	ReasonIdle
	// ReasonNewKey: a key from a header, query or client address that the
	// store did not know.
	ReasonNewKey
	// ReasonNoKey: no source had a key and the pool has no cookie source.
	ReasonNoKey
	// ReasonServedElsewhere: Envoy's retry served the request on another
	// host than the one the decision named first (it could not be
	// reached), and the session was re-bound to that host.
	ReasonServedElsewhere
)

var reasonNames = [...]string{"", "no-cookie", "invalid-cookie", "expired", "host-left", "no-pool", "no-hosts", "unverified", "draining", "idle", "new-key", "no-key", "served-elsewhere"}

func (r Reason) String() string { return reasonNames[r] }

// reasonOverloaded labels a placement that skipped the session's first
// choice because it was full.
const reasonOverloaded = "overloaded"

// ReasonLabel is the decision's reason as metrics and explanations name it:
// "overloaded" when bounded loads skipped the first choice, else Reason.
func (d *Decision) ReasonLabel() string {
	if d.Overloaded {
		return reasonOverloaded
	}
	return d.Reason.String()
}

// Request is what a decision needs to know of an HTTP request.
type Request struct {
	// Pool names the pool explicitly ("" to choose by Cluster).
	Pool string
	// Cluster is the Envoy cluster the request is routed to ("" if unknown).
	Cluster string
	// CookieHeaders are the values of the request's Cookie headers.
	CookieHeaders []string
	// Headers reads other request headers (key sources); may be nil.
	Headers Headers
	// SourceAddress is the downstream connection's ip:port.
	SourceAddress string
}

// Decision is where a request goes and what the response must carry.
type Decision struct {
	Outcome Outcome
	Reason  Reason
	// Pool is the pool that decided ("" on pass-through).
	Pool string
	// Hosts are the addresses to try, primary first. Read only: decisions
	// of one session may share it.
	Hosts []string
	// Override is Hosts joined with commas, as Envoy's override_host reads
	// it; set on the decisions of cached established sessions (empty
	// otherwise: join Hosts).
	Override string
	// HostID is the ID of the primary host.
	HostID string
	// SetCookie is the Set-Cookie value to add to the response, or "" when
	// the client's cookie is still right (and always in native mode).
	SetCookie string
	// Status and Body answer the request in place of the upstream
	// (OutcomeRejected only).
	Status int
	Body   string
	// Overloaded is set when the session's first choice was full (bounded
	// loads) and a later one took it.
	Overloaded bool
	// Session is the session the SetCookie token carries (when there is
	// one), for a re-bind in the response phase.
	Session Session
	// LearnCookie names the application's session cookie: when the
	// response sets it, pass its value and the host that served the
	// response to Engine.Learn.
	LearnCookie string
	// SetHeaders are added to the request for the application (name,
	// value); RemoveHeaders are removed from it first (client copies).
	// Read only: decisions may share them.
	SetHeaders    [][2]string
	RemoveHeaders []string
	// Output names the request headers the decision is written to besides
	// the metadata: set from Hosts when there are hosts, else removed.
	Output OutputHeaders
}

// StrictBody is the answer to a session whose host is gone in a strict pool.
const StrictBody = "503 Service Unavailable: the server holding this session is gone; the session cookie was cleared, the next request starts a new session\n"

// Engine makes decisions against the configuration in force. It is safe for
// concurrent use; Update swaps the configuration atomically.
type Engine struct {
	snap  atomic.Pointer[Snapshot]
	now   func() time.Time
	store Store
	// pinned caches decisions for established sessions (opaque mode).
	pinned *lru.Cache[string, pinnedEntry]
	// mu orders writers (Update, SetHosts); readers only load snap.
	mu sync.Mutex
	// discovered holds each discovered pool's latest good host list, so
	// that a configuration reload keeps it.
	discovered map[string][]HostSpec
	// hostHealth is the service's own health view, by pool and host ID.
	hostHealth map[string]map[string]*hostHealth
	// overrides are the operator's runtime host states, by pool and host ID.
	overrides map[string]map[string]HostOverride
	// onChange hears of every configuration put in force (nil: none).
	onChange func(before, after *Snapshot)
	// unknownPool counts requests no pool took (passed through untouched).
	unknownPool atomic.Uint64
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
	e := &Engine{now: now, store: NewMemoryStore(max, s.idleTimeout())}
	e.pinned, _ = lru.New[string, pinnedEntry](PinnedCacheSize)
	e.snap.Store(s)
	return e
}

// PinnedCacheSize is how many established sessions' decisions the engine
// keeps, so that a session's every request (opaque mode) does not verify a
// signature again: Ed25519 verification costs about 40 µs, a cache hit well
// under one.
const PinnedCacheSize = 65536

// pinnedEntry is a verified token and the decision it led to under one
// configuration. The token itself is the key, compared in full, so only the
// very token that was verified hits.
type pinnedEntry struct {
	snap     *Snapshot
	pool     *Pool
	expires  time.Time
	hosts    []string // shared by the decisions it serves; never written
	override string   // hosts joined
	hostID   string
	session  string
	tracking bool // bounded loads count the session on each request
}

// SetStore replaces the session store (before the engine is used).
func (e *Engine) SetStore(s Store) { e.store = s }

// Update puts a new configuration in force for every later decision. Pools
// whose hosts come from discovery keep the hosts last discovered.
func (e *Engine) Update(s *Snapshot) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.store.(*MemoryStore); ok {
		m.SetIdle(s.idleTimeout())
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

// OnChange sets a function called with the configuration in force before
// and after each change (a reload, a host source's update, a health or
// operator change of a host), in order, with the engine's lock held: it
// must be quick and must not call back into the engine's writers. Set it
// before the engine is used.
func (e *Engine) OnChange(f func(before, after *Snapshot)) { e.onChange = f }

// swapLocked puts s in force; called with e.mu held.
func (e *Engine) swapLocked(s *Snapshot) {
	before := e.snap.Swap(s)
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

// Snapshot returns the configuration in force.
func (e *Engine) Snapshot() *Snapshot { return e.snap.Load() }

// Now is the engine's clock.
func (e *Engine) Now() time.Time { return e.now() }

// Decide places the request's session.
func (e *Engine) Decide(req Request) Decision {
	snap := e.snap.Load()
	pool, ok := snap.Pool(req.Pool, req.Cluster)
	if !ok {
		e.unknownPool.Add(1)
		// Whatever the request's cluster reads, a client's copy of any
		// pool's output header is removed (the slice is shared).
		return Decision{Reason: ReasonNoPool, RemoveHeaders: snap.outputHeaders}
	}
	if pool.Hosts.Len() == 0 {
		return Decision{Pool: pool.Name, Reason: ReasonNoHosts, Output: pool.Output}
	}
	now := e.now()
	if !snap.healthExpiry.IsZero() && !now.Before(snap.healthExpiry) {
		e.expireHealth(now)
		snap = e.snap.Load()
		if pool, ok = snap.Pool(req.Pool, req.Cluster); !ok {
			return Decision{Reason: ReasonNoPool, RemoveHeaders: snap.outputHeaders}
		}
	}
	d, fromAppCookie := e.decide(snap, pool, &req, now)
	e.annotate(pool, &d, fromAppCookie)
	d.Output = pool.Output
	return d
}

// decide runs the pool's key sources in order; it also reports whether the
// decision came from a learned application cookie.
func (e *Engine) decide(snap *Snapshot, pool *Pool, req *Request, now time.Time) (Decision, bool) {
	if pool.Mode == ModeNative {
		// Envoy's own cookie pins established sessions; the service is
		// asked only to place a new one.
		return e.bind(snap, pool, newSession(now), OutcomeNew, ReasonNoCookie, now), false
	}
	for i := range pool.KeySources {
		ks := &pool.KeySources[i]
		if ks.Type == SourceCookie {
			for _, h := range req.CookieHeaders {
				if token, found := CookieValue(h, pool.Cookie.Name); found {
					return e.fromToken(snap, pool, token, now), false
				}
			}
			continue
		}
		if key := ks.key(req); key != "" {
			if d, ok := e.keyed(pool, ks, key, now); ok {
				return d, ks.Type == SourceAppCookie
			}
		}
	}
	if _, ok := pool.source(SourceCookie); ok {
		return e.bind(snap, pool, newSession(now), OutcomeNew, ReasonNoCookie, now), false
	}
	return Decision{Pool: pool.Name, Reason: ReasonNoKey}, false
}

// newSession starts a session at now with a random id.
func newSession(now time.Time) Session { return Session{ID: NewSessionID(), Start: now} }

// fromToken decides for a request carrying our session cookie.
func (e *Engine) fromToken(snap *Snapshot, pool *Pool, token string, now time.Time) Decision {
	if c, ok := e.pinned.Get(token); ok && c.snap == snap && c.pool == pool && now.Before(c.expires) {
		if c.tracking {
			e.store.Seen(pool.Name, c.session, c.hostID, now)
		}
		return Decision{Outcome: OutcomePinned, Pool: pool.Name, Hosts: c.hosts, Override: c.override, HostID: c.hostID}
	}
	v := judge(snap, pool, token, now)
	switch v.outcome {
	case OutcomeNew:
		return e.bind(snap, pool, newSession(now), OutcomeNew, v.reason, now)
	case OutcomeRejected:
		return Decision{Outcome: OutcomeRejected, Reason: v.reason, Pool: pool.Name, Status: 503, Body: StrictBody, SetCookie: pool.Cookie.Expire()}
	case OutcomeRebound:
		// The host left: the session keeps its id and start and goes to
		// the first of its own choices that is still here.
		return e.bind(snap, pool, v.sess, OutcomeRebound, v.reason, now)
	}
	sess, err, host := v.sess, v.err, v.host
	d := Decision{Outcome: OutcomePinned, Pool: pool.Name, Hosts: pinnedHosts(pool.placement(), sess.ID, host, pool.OverrideHosts), HostID: host.ID}
	if pool.LoadFactor > 0 {
		e.store.Seen(pool.Name, sess.ID, host.ID, now)
	}
	switch {
	case err != nil:
		d.Reason = ReasonExpired
	case pool.Mode == ModeVerified:
		d.Reason = ReasonUnverified
	default:
		// Valid until the token expires or its host's drain deadline passes,
		// whichever comes first; a new configuration is a new snapshot.
		until := sess.ExpiresAt
		if deadline, ok := pool.Draining[host.ID]; ok && deadline.Before(until) {
			until = deadline
		}
		d.Override = strings.Join(d.Hosts, ",")
		e.pinned.Add(strings.Clone(token), pinnedEntry{snap: snap, pool: pool, expires: until, hosts: d.Hosts, override: d.Override,
			hostID: host.ID, session: sess.ID, tracking: pool.LoadFactor > 0})
		return d
	}
	e.issue(snap, pool, sess, &d, now)
	return d
}

// verdict is what a session token means under a pool, before placement:
// pinned to host, or a new, re-bound or rejected session and why.
type verdict struct {
	sess    Session
	err     error // the verification error (an expired token may still be pinned)
	outcome Outcome
	reason  Reason
	host    Host
}

// judge verifies a session token and checks the host it names. It changes
// nothing, so that explaining a cookie is the very decision a request gets.
func judge(snap *Snapshot, pool *Pool, token string, now time.Time) verdict {
	sess, err := snap.Codec.Verify(token, now)
	v := verdict{sess: sess, err: err, outcome: OutcomeNew}
	switch {
	case err == nil:
	case errors.Is(err, ErrTokenExpired) && !now.Before(sess.Start.Add(pool.AbsoluteTimeout)):
		v.reason = ReasonExpired
		return v
	case errors.Is(err, ErrTokenExpired) && now.Sub(sess.IssuedAt) > pool.IdleTimeout+pool.RefreshInterval:
		// The token was issued when the service last saw the session; a
		// request in the refresh interval after that would have refreshed
		// it, so the session has been idle for longer than the timeout.
		v.reason = ReasonIdle
		return v
	case errors.Is(err, ErrTokenExpired):
		// A good signature past its exp, within the timeouts: a refresh of
		// the same session.
	default:
		v.reason = ReasonInvalidCookie
		return v
	}
	bound, found := pool.boundHost(sess)
	v.host, v.reason = pool.liveHost(bound, found, now)
	switch {
	case v.reason == ReasonNone:
		v.outcome = OutcomePinned
	case pool.Strict:
		v.outcome = OutcomeRejected
	default:
		v.outcome = OutcomeRebound
	}
	return v
}

// liveHost checks a bound host: ReasonNone when it may still serve the
// session, else why not (it left the pool, or its drain deadline passed).
func (p *Pool) liveHost(h Host, found bool, now time.Time) (Host, Reason) {
	if !found {
		return h, ReasonHostLeft
	}
	if deadline, draining := p.Draining[h.ID]; draining && !now.Before(deadline) {
		return h, ReasonDraining
	}
	return h, ReasonNone
}

// keyed decides for a key from a header, query parameter, client address or
// application cookie: the host the store remembers for it, or a placement
// by the key's hash, remembered so that later host additions do not move it.
// An application cookie the store does not know is no decision (false): the
// next source is tried.
func (e *Engine) keyed(pool *Pool, ks *KeySourceSpec, key string, now time.Time) (Decision, bool) {
	bound, known := e.store.Binding(pool.Name, key, now)
	if !known && ks.Type == SourceAppCookie {
		return Decision{}, false
	}
	outcome, reason := OutcomeNew, ReasonNewKey
	if known {
		host, found := pool.Hosts.Lookup(bound)
		host, gone := pool.liveHost(host, found, now)
		if gone == ReasonNone {
			e.store.Seen(pool.Name, key, host.ID, now)
			return Decision{Outcome: OutcomePinned, Pool: pool.Name, Hosts: pinnedHosts(pool.placement(), key, host, pool.OverrideHosts), HostID: host.ID}, true
		}
		if pool.Strict {
			return Decision{Outcome: OutcomeRejected, Reason: gone, Pool: pool.Name, Status: 503, Body: StrictBody}, true
		}
		outcome, reason = OutcomeRebound, gone
	}
	order, overloaded := e.choose(pool, pool.placement(), key, now)
	d := Decision{Outcome: outcome, Reason: reason, Pool: pool.Name, Hosts: make([]string, len(order)), HostID: order[0].ID, Overloaded: overloaded}
	for i, h := range order {
		d.Hosts[i] = h.Address
	}
	e.store.Seen(pool.Name, key, d.HostID, now)
	return d, true
}

// Learn records that the application's session cookie value was set by a
// response the host at served (ip:port) answered; later requests carrying
// the cookie go to that host. It reports whether it recorded anything.
func (e *Engine) Learn(pool, cluster, value, served string) bool {
	p, ok := e.snap.Load().Pool(pool, cluster)
	return ok && e.learn(p, value, served)
}

func (e *Engine) learn(pool *Pool, value, served string) bool {
	if value == "" {
		return false
	}
	if _, ok := pool.source(SourceAppCookie); !ok {
		return false
	}
	host, ok := pool.Hosts.LookupAddress(served)
	if !ok {
		return false
	}
	e.store.Seen(pool.Name, prefixAppCookie+value, host.ID, e.now())
	return true
}

// Rebind re-binds a session whose request was served by another host than
// its primary (Envoy's retry went to the successor): it returns the session's
// cookie bound to the host at served (ip:port), or false when that host is
// not one new sessions may go to.
func (e *Engine) Rebind(pool, cluster string, sess Session, served string) (string, bool) {
	snap := e.snap.Load()
	p, ok := snap.Pool(pool, cluster)
	if !ok || p.Mode == ModeNative {
		return "", false
	}
	host, ok := p.Active.LookupAddress(served)
	if !ok {
		return "", false
	}
	now := e.now()
	d := Decision{Outcome: OutcomeRebound, Pool: p.Name, Hosts: pinnedHosts(p.placement(), sess.ID, host, p.OverrideHosts), HostID: host.ID}
	if p.LoadFactor > 0 {
		e.store.Seen(p.Name, sess.ID, host.ID, now)
	}
	e.issue(snap, p, sess, &d, now)
	return d.SetCookie, d.SetCookie != ""
}

// reboundValues is what the rebound header says for each reason.
var reboundValues = map[Reason]string{
	ReasonHostLeft: "host-left",
	ReasonDraining: "draining-deadline",
	ReasonExpired:  "expired",
	ReasonIdle:     "idle",
}

// annotate adds what the response phase and the application need: the
// application cookie to learn, and the upstream headers.
func (e *Engine) annotate(pool *Pool, d *Decision, fromAppCookie bool) {
	if d.Outcome == OutcomePassThrough || d.Outcome == OutcomeRejected {
		return
	}
	if ks, ok := pool.source(SourceAppCookie); ok && !fromAppCookie {
		d.LearnCookie = ks.Name
	}
	for _, name := range [2]string{pool.ReboundHeader, pool.SuccessorHeader} {
		if name != "" {
			d.RemoveHeaders = append(d.RemoveHeaders, name)
		}
	}
	if name := pool.ReboundHeader; name != "" {
		why := ""
		switch {
		case d.Outcome == OutcomeRebound:
			why = reboundValues[d.Reason]
		case d.Outcome == OutcomeNew && (d.Reason == ReasonExpired || d.Reason == ReasonIdle):
			why = reboundValues[d.Reason]
		}
		if d.Overloaded {
			why = strings.TrimPrefix(why+",overloaded", ",")
		}
		if why != "" {
			d.SetHeaders = append(d.SetHeaders, [2]string{name, why})
		}
	}
	if name := pool.SuccessorHeader; name != "" && len(d.Hosts) > 1 {
		if h, ok := pool.Hosts.LookupAddress(d.Hosts[1]); ok {
			d.SetHeaders = append(d.SetHeaders, [2]string{name, h.ID})
		}
	}
}

// boundHost is the pool's host the token names, if it is still in the pool.
func (p *Pool) boundHost(s Session) (Host, bool) {
	if p.Mode == ModeVerified {
		primary, _, _ := strings.Cut(s.Host, ",")
		return p.Hosts.LookupAddress(primary)
	}
	return p.Hosts.Lookup(s.Host)
}

// bind places the session (its first choice with room) and issues its cookie.
func (e *Engine) bind(snap *Snapshot, pool *Pool, sess Session, o Outcome, r Reason, now time.Time) Decision {
	hosts := pool.placement()
	order, overloaded := e.choose(pool, hosts, sess.ID, now)
	d := Decision{Outcome: o, Reason: r, Pool: pool.Name, Hosts: make([]string, len(order)), HostID: order[0].ID, Overloaded: overloaded}
	for i, h := range order {
		d.Hosts[i] = h.Address
	}
	if pool.LoadFactor > 0 {
		e.store.Seen(pool.Name, sess.ID, d.HostID, now)
	}
	if pool.Mode != ModeNative {
		e.issue(snap, pool, sess, &d, now)
	}
	return d
}

// choose returns the session's primary and successor. Without a load cap
// they are its first two choices. With one, the primary is its first choice
// whose active sessions stay within ⌈c × mean⌉ after taking it, and the
// successor the choice after that; if none of its first MaxRank choices has
// room, the least loaded host (which always has) takes it.
func (e *Engine) choose(pool *Pool, hosts *HostSet, sid string, now time.Time) ([]Host, bool) {
	var rank [MaxRank]int
	k := pool.OverrideHosts
	if pool.LoadFactor > 0 {
		k = MaxRank
	}
	n := hosts.Rank(sessionKey(sid), rank[:k])
	pick := 0
	if pool.LoadFactor > 0 {
		load := map[string]int{}
		e.store.Load(pool.Name, now, load)
		limit := loadCap(pool.LoadFactor, hosts, load)
		pick = -1
		for i := 0; i < n; i++ {
			if load[hosts.At(rank[i]).ID]+1 <= limit {
				pick = i
				break
			}
		}
		if pick < 0 {
			least := 0
			for i, h := range hosts.hosts {
				if load[h.ID] < load[hosts.hosts[least].ID] {
					least = i
				}
			}
			out := []Host{hosts.At(least)}
			for i := 0; i < n && len(out) < pool.OverrideHosts; i++ {
				if rank[i] != least {
					out = append(out, hosts.At(rank[i]))
				}
			}
			return out, true
		}
	}
	// The chosen host, then the choices after it, then those it skipped.
	out := make([]Host, 0, pool.OverrideHosts)
	for i := 0; i < n && len(out) < pool.OverrideHosts; i++ {
		out = append(out, hosts.At(rank[(pick+i)%n]))
	}
	return out, pick > 0
}

// loadCap is the most active sessions a host may have after taking one more
// session: ⌈c × mean⌉ over hosts, the new session counted.
func loadCap(c float64, hosts *HostSet, load map[string]int) int {
	total := 0
	for _, h := range hosts.hosts {
		total += load[h.ID]
	}
	return int(math.Ceil(c * float64(total+1) / float64(hosts.Len())))
}

// issue signs a token binding the session to d's hosts, valid for one
// refresh interval (never past the absolute timeout, nor past the drain
// deadline of its host, so that Envoy hands it back in time), into
// d.SetCookie.
func (e *Engine) issue(snap *Snapshot, pool *Pool, sess Session, d *Decision, now time.Time) {
	end := sess.Start.Add(pool.AbsoluteTimeout)
	sess.IssuedAt = now
	sess.ExpiresAt = now.Add(pool.RefreshInterval)
	if sess.ExpiresAt.After(end) {
		sess.ExpiresAt = end
	}
	if deadline, ok := pool.Draining[d.HostID]; ok && sess.ExpiresAt.After(deadline) && deadline.After(now) {
		sess.ExpiresAt = deadline
	}
	if pool.Mode == ModeVerified {
		sess.Host = strings.Join(d.Hosts, ",")
	} else {
		sess.Host = d.HostID
	}
	token, err := snap.Codec.Sign(sess, now)
	if err != nil {
		// Signing with a validated key does not fail; route without a
		// cookie rather than fail the request if it ever does.
		return
	}
	// The cookie lives as long as the session may: the token inside it is
	// refreshed each interval.
	d.SetCookie = pool.Cookie.SetCookie(token, now, end)
	d.Session = sess
}

// pinnedHosts lists the session's own host first and then the session's
// best choices among the others: where it moves if its own leaves.
func pinnedHosts(hs *HostSet, sid string, own Host, length int) []string {
	var rank [MaxRank]int
	n := hs.Rank(sessionKey(sid), rank[:length])
	out := make([]string, 1, length)
	out[0] = own.Address
	for i := 0; i < n && len(out) < length; i++ {
		if h := hs.At(rank[i]); h.ID != own.ID {
			out = append(out, h.Address)
		}
	}
	return out
}

// sessionKey is the placement key of a session id.
func sessionKey(sid string) uint64 { return xxhash.Sum64String(sid) }
