package affinity

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// OverrideHosts is how many hosts a decision lists: the primary and the
// successor an Envoy retry goes to when the primary cannot be reached.
const OverrideHosts = 2

// Pool is a configured pool in force: its cookie, lifetimes and hosts.
type Pool struct {
	Name            string
	Cookie          CookieSpec
	AbsoluteTimeout time.Duration
	Hosts           *HostSet
}

// Snapshot is one configuration in force: immutable, swapped whole.
type Snapshot struct {
	Pools  []*Pool
	Codec  *TokenCodec
	byName map[string]*Pool
}

// Pool returns the pool for an Envoy cluster name: the pool of that name, or
// the only pool when there is just one.
func (s *Snapshot) Pool(cluster string) (*Pool, bool) {
	if p, ok := s.byName[cluster]; ok {
		return p, true
	}
	if len(s.Pools) == 1 {
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
	// OutcomePinned: the cookie's host is in the pool; nothing changes.
	OutcomePinned
	// OutcomeNew: a new session was placed and a cookie issued.
	OutcomeNew
	// OutcomeRebound: the session keeps its id but moves to another host.
	OutcomeRebound
)

var outcomeNames = [...]string{"pass-through", "pinned", "new", "rebound"}

func (o Outcome) String() string { return outcomeNames[o] }

// Reason says why a session is new or was re-bound.
type Reason uint8

// Reasons.
const (
	ReasonNone Reason = iota
	// ReasonNoCookie: the request carried no session cookie.
	ReasonNoCookie
	// ReasonInvalidCookie: the cookie was malformed, forged, signed by an
	// unknown key or too long.
	ReasonInvalidCookie
	// ReasonExpired: the token's lifetime passed.
	ReasonExpired
	// ReasonHostLeft: the session's host is no longer in the pool.
	ReasonHostLeft
	// ReasonNoPool: no pool serves the request's cluster.
	ReasonNoPool
	// ReasonNoHosts: the pool has no host.
	ReasonNoHosts
)

var reasonNames = [...]string{"", "no-cookie", "invalid-cookie", "expired", "host-left", "no-pool", "no-hosts"}

func (r Reason) String() string { return reasonNames[r] }

// Request is what a decision needs to know of an HTTP request.
type Request struct {
	// Cluster is the Envoy cluster the request is routed to ("" if unknown).
	Cluster string
	// CookieHeaders are the values of the request's Cookie headers.
	CookieHeaders []string
}

// Decision is where a request goes and what the response must carry.
type Decision struct {
	Outcome Outcome
	Reason  Reason
	// Pool is the pool that decided ("" on pass-through).
	Pool string
	// Hosts are the addresses to try, primary first.
	Hosts []string
	// HostID is the ID of the primary host.
	HostID string
	// SetCookie is the Set-Cookie value to add to the response, or "" when
	// the client's cookie is still right.
	SetCookie string
}

// Engine makes decisions against the configuration in force. It is safe for
// concurrent use; Update swaps the configuration atomically.
type Engine struct {
	snap atomic.Pointer[Snapshot]
	now  func() time.Time
}

// NewEngine returns an engine deciding with s. now is the clock (time.Now
// when nil).
func NewEngine(s *Snapshot, now func() time.Time) *Engine {
	if now == nil {
		now = time.Now
	}
	e := &Engine{now: now}
	e.snap.Store(s)
	return e
}

// Update puts a new configuration in force for every later decision.
func (e *Engine) Update(s *Snapshot) { e.snap.Store(s) }

// Snapshot returns the configuration in force.
func (e *Engine) Snapshot() *Snapshot { return e.snap.Load() }

// Decide places the request's session.
func (e *Engine) Decide(req Request) Decision {
	snap := e.snap.Load()
	pool, ok := snap.Pool(req.Cluster)
	if !ok {
		return Decision{Reason: ReasonNoPool}
	}
	if pool.Hosts.Len() == 0 {
		return Decision{Pool: pool.Name, Reason: ReasonNoHosts}
	}
	now := e.now()
	token, found := "", false
	for _, h := range req.CookieHeaders {
		if token, found = CookieValue(h, pool.Cookie.Name); found {
			break
		}
	}
	reason := ReasonNoCookie
	if found {
		sess, err := snap.Codec.Verify(token, now)
		switch {
		case err == nil:
			if host, ok := pool.Hosts.Lookup(sess.HostID); ok {
				return Decision{
					Outcome: OutcomePinned,
					Pool:    pool.Name,
					Hosts:   pinnedHosts(pool.Hosts, sess.ID, host),
					HostID:  host.ID,
				}
			}
			// The host left: the session keeps its id and lifetime and goes
			// to the first of its own choices that is still here.
			return e.place(snap, pool, sess, OutcomeRebound, ReasonHostLeft, now)
		case errors.Is(err, ErrTokenExpired):
			reason = ReasonExpired
		default:
			reason = ReasonInvalidCookie
		}
	}
	sess := Session{ID: NewSessionID(), IssuedAt: now, ExpiresAt: now.Add(pool.AbsoluteTimeout)}
	return e.place(snap, pool, sess, OutcomeNew, reason, now)
}

// place binds the session to its first choice and issues its cookie.
func (e *Engine) place(snap *Snapshot, pool *Pool, sess Session, o Outcome, r Reason, now time.Time) Decision {
	var rank [OverrideHosts]int
	n := pool.Hosts.Rank(sessionKey(sess.ID), rank[:])
	d := Decision{Outcome: o, Reason: r, Pool: pool.Name, Hosts: make([]string, n)}
	for i := 0; i < n; i++ {
		d.Hosts[i] = pool.Hosts.At(rank[i]).Address
	}
	primary := pool.Hosts.At(rank[0])
	d.HostID = primary.ID
	sess.HostID = primary.ID
	token, err := snap.Codec.Sign(sess)
	if err != nil {
		// HS256 signing with a validated key cannot fail; route without a
		// cookie rather than fail the request if it ever does.
		return d
	}
	d.SetCookie = pool.Cookie.SetCookie(token, now, sess.ExpiresAt)
	return d
}

// pinnedHosts lists the session's own host first and then the session's
// best choice among the others: the host it moves to if its own leaves.
func pinnedHosts(hs *HostSet, sid string, own Host) []string {
	var rank [OverrideHosts]int
	n := hs.Rank(sessionKey(sid), rank[:])
	out := make([]string, 1, OverrideHosts)
	out[0] = own.Address
	for i := 0; i < n && len(out) < OverrideHosts; i++ {
		if h := hs.At(rank[i]); h.ID != own.ID {
			out = append(out, h.Address)
		}
	}
	return out
}

// sessionKey is the placement key of a session id.
func sessionKey(sid string) uint64 { return xxhash.Sum64String(sid) }
