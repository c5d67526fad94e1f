package affinity

import (
	"errors"
	"strings"
	"time"
)

// Decide places the request's session.
func (e *Engine) Decide(req Request) Decision {
	snap := e.snap.Load()
	pool, ok := snap.Pool(req.Pool, req.Cluster)
	if !ok {
		e.unknownPool.Add(1)
		// Whatever the request's cluster reads, a client's copy of any
		// pool's headers is removed (the slice is shared).
		return Decision{Reason: ReasonNoPool, RemoveHeaders: snap.clientHeaders}
	}
	if pool.Hosts.Len() == 0 {
		return Decision{Pool: pool.Name, Reason: ReasonNoHosts, Output: pool.Output, RemoveHeaders: pool.clientHeaders(false)}
	}
	now := e.now()
	if !snap.healthExpiry.IsZero() && !now.Before(snap.healthExpiry) {
		e.expireHealth(now)
		snap = e.snap.Load()
		if pool, ok = snap.Pool(req.Pool, req.Cluster); !ok {
			return Decision{Reason: ReasonNoPool, RemoveHeaders: snap.clientHeaders}
		}
	}
	d, fromLearned := e.decide(snap, pool, &req, now)
	e.annotate(pool, &d, fromLearned)
	d.Output = pool.Output
	d.RemoveHeaders = pool.clientHeaders(len(d.Hosts) > 0)
	return d
}

// decide runs the pool's key sources in order; it also reports whether the
// decision came from a learned source (application cookie, upstream
// header).
func (e *Engine) decide(snap *Snapshot, pool *Pool, req *Request, now time.Time) (Decision, bool) {
	if pool.Mode == ModeNative {
		// Envoy's own cookie pins established sessions; the service is
		// asked only to place a new one.
		return e.bind(snap, pool, newSession(now), OutcomeNew, ReasonNoCookie, now), false
	}
	for i := range pool.KeySources {
		ks, tr := &pool.KeySources[i], &pool.KeySources[i].traits
		if tr.binding == bindToken {
			// Our token, on every request of an established session:
			// read without a call through its kind, which costs a
			// measurable share of the decision (BenchmarkDecidePinned).
			if token, found := requestToken(ks, req); found {
				return e.fromToken(snap, pool, token, now), false
			}
			continue
		}
		value, found := ks.kind.read(ks, *req)
		if !found {
			continue
		}
		if ks.Envelope {
			if d, ok := e.fromEnvelope(snap, pool, ks, value, now); ok {
				return d, true
			}
			// Not an envelope of this pool: a value too long to wrap
			// was learned instead (below); anything else is unknown.
		}
		key := tr.prefix + value
		if d, ok := e.keyed(pool, tr.binding, key, now); ok {
			if tr.endsOnDelete && d.Outcome != OutcomeRejected && isDelete(req) {
				// The client ends the session: this request still goes
				// to its host, later ones are unknown.
				e.store.Unbind(pool.Name, key)
			}
			return d, tr.binding == bindLearned
		}
	}
	if pool.keyedBy(bindToken) {
		return e.bind(snap, pool, newSession(now), OutcomeNew, ReasonNoCookie, now), false
	}
	if pool.keyedBy(bindLearned) {
		// No key yet: the service places the request (with bounded loads)
		// and learns the key from its response. Until then the placement
		// counts as a session of its host, so that a burst of new
		// sessions is capped as it is placed, not once its responses are
		// back.
		id := NewSessionID()
		d := e.place(pool, id, OutcomeNew, ReasonNoKey, now)
		if pool.LoadFactor > 0 {
			e.store.Seen(pool.Name, id, d.HostID, now)
			d.Placement = id
		}
		return d, false
	}
	return Decision{Pool: pool.Name, Reason: ReasonNoKey}, false
}

// isDelete tells whether the request's method is DELETE.
func isDelete(req *Request) bool {
	m, _ := req.header(":method")
	return m == "DELETE"
}

// newSession starts a session at now with a random id.
func newSession(now time.Time) Session { return Session{ID: NewSessionID(), Start: now} }

// fromToken decides for a request carrying our session cookie.
func (e *Engine) fromToken(snap *Snapshot, pool *Pool, token string, now time.Time) Decision {
	if c, ok := e.established.Get(token); ok && c.snap == snap && c.pool == pool && !c.envelope && now.Before(c.expires) {
		if c.tracking {
			e.store.Seen(pool.Name, c.session, c.hostID, now)
		}
		return Decision{Outcome: OutcomePinned, Pool: pool.Name, Hosts: c.hosts, OverrideList: c.overrideList, HostID: c.hostID}
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
	d := Decision{Outcome: OutcomePinned, Pool: pool.Name, Hosts: overrideList(pool.placement(), sess.ID, host, pool.OverrideListLen), HostID: host.ID}
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
		d.OverrideList = strings.Join(d.Hosts, ",")
		e.established.Add(strings.Clone(token), establishedEntry{snap: snap, pool: pool, expires: until, hosts: d.Hosts, overrideList: d.OverrideList,
			hostID: host.ID, session: sess.ID, tracking: pool.LoadFactor > 0})
		return d
	}
	e.issue(snap, pool, sess, &d, now)
	return d
}

// tokenRounding is the slack on a token's lifetime: iat and exp are whole
// seconds.
const tokenRounding = 2 * time.Second

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
	if err == nil && sess.ExpiresAt.Sub(sess.IssuedAt) > pool.RefreshInterval+tokenRounding {
		// Valid for longer than this pool issues tokens (say its refresh
		// interval was shortened): it is refreshed, like an expired one.
		err = ErrTokenExpired
	}
	v := verdict{sess: sess, err: err, outcome: OutcomeNew}
	switch {
	case (err == nil || errors.Is(err, ErrTokenExpired)) && (sess.Pool != "" && sess.Pool != pool.Name || sess.Envelope):
		// Another pool's token, whatever hosts the two share, or an
		// upstream header's envelope.
		v.reason = ReasonInvalidCookie
		return v
	case (err == nil || errors.Is(err, ErrTokenExpired)) && !now.Before(sess.Start.Add(pool.AbsoluteTimeout)):
		// Checked at every verification: a lowered absolute timeout ends
		// sessions whose tokens are still valid.
		v.reason = ReasonExpired
		return v
	case err == nil:
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
	v.settle(pool)
	return v
}

// settle sets the outcome for a bound host checked by liveHost: pinned when
// it may still serve, else rejected in a strict pool or re-bound.
func (v *verdict) settle(p *Pool) {
	switch {
	case v.reason == ReasonNone:
		v.outcome = OutcomePinned
	case p.Strict:
		v.outcome = OutcomeRejected
	default:
		v.outcome = OutcomeRebound
	}
}

// keyed decides for a key from a header, query parameter, client address or
// application cookie: the host the store remembers for it, or a placement
// by the key's hash, remembered so that later host additions do not move it.
// An application cookie the store does not know is no decision (false): the
// next source is tried.
func (e *Engine) keyed(pool *Pool, binding keyBinding, key string, now time.Time) (Decision, bool) {
	var bound string
	var known bool
	if binding == bindLearned {
		// Only the response that set an application cookie or session
		// header binds it.
		bound, known = e.store.Binding(pool.Name, key, now)
	} else {
		// A new key is placed and bound in one step, so that replicas
		// sharing a store agree on the first binding.
		var placed Decision
		if bound, known = e.store.Claim(pool.Name, key, now, func() string {
			placed = e.place(pool, key, OutcomeNew, ReasonNewKey, now)
			return placed.HostID
		}); !known {
			placed.Key = key
			return placed, true
		}
	}
	v := judgeKey(pool, binding, bound, known, now)
	switch v.outcome {
	case OutcomePassThrough:
		return Decision{}, false
	case OutcomePinned:
		e.store.Bind(pool.Name, key, v.host.ID, now)
		return Decision{Outcome: OutcomePinned, Pool: pool.Name, Hosts: overrideList(pool.placement(), key, v.host, pool.OverrideListLen), HostID: v.host.ID, Key: key}, true
	case OutcomeRejected:
		return Decision{Outcome: OutcomeRejected, Reason: v.reason, Pool: pool.Name, Status: 503, Body: StrictBody}, true
	}
	d := e.place(pool, key, v.outcome, v.reason, now)
	e.store.Bind(pool.Name, key, d.HostID, now)
	d.Key = key
	return d, true
}

// judgeKey is what the store's binding of a key means under a pool, before
// placement: pinned to its host, or a new, re-bound or rejected key and
// why; OutcomePassThrough for an application cookie the store does not
// know (the next source decides). It changes nothing, so that explaining a
// key is the very decision a request gets.
func judgeKey(p *Pool, binding keyBinding, bound string, known bool, now time.Time) verdict {
	switch {
	case !known && binding == bindLearned:
		return verdict{outcome: OutcomePassThrough}
	case !known:
		return verdict{outcome: OutcomeNew, reason: ReasonNewKey}
	}
	host, found := p.Hosts.Lookup(bound)
	if !found {
		host.ID = bound
	}
	v := verdict{}
	v.host, v.reason = p.liveHost(host, found, now)
	v.settle(p)
	return v
}

// reboundValues is what the rebound header says for each reason.
var reboundValues = map[Reason]string{
	ReasonHostLeft: "host-left",
	ReasonDraining: "draining-deadline",
	ReasonExpired:  "expired",
	ReasonIdle:     "idle",
}

// annotate adds what the response phase and the application need: the
// application cookie or upstream session header to learn (unless the
// decision came from a learned source), and the upstream headers.
func (e *Engine) annotate(pool *Pool, d *Decision, fromLearned bool) {
	if d.Outcome == OutcomePassThrough || d.Outcome == OutcomeRejected {
		return
	}
	if !fromLearned {
		d.LearnCookie, d.LearnHeader = pool.learning.cookie, pool.learning.header
	}
	// Whatever the request carried, a value the response sets goes to the
	// client in an envelope.
	d.EnvelopeHeader = pool.learning.envelope
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
