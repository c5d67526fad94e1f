package affinity

import (
	"encoding/base64"
	"strings"
	"time"
)

// MaxEnvelopedValue is the longest upstream session header value an
// envelope carries (the token stays within MaxTokenBytes); a longer one is
// learned in the store instead.
const MaxEnvelopedValue = 256

// StrictEnvelopeBody answers a request whose session header names a host
// that is gone, in a strict pool.
const StrictEnvelopeBody = "503 Service Unavailable: the server holding this session is gone; start a new session\n"

// fromEnvelope decides for a request whose upstream session header carries
// value: an envelope this pool signed goes to the host it names (or, that
// host gone, to the session's next choice) with the upstream's own value
// restored in the header. Anything else is no decision (false): the value
// goes on as the client sent it.
func (e *Engine) fromEnvelope(snap *Snapshot, pool *Pool, ks *KeySourceSpec, value string, now time.Time) (Decision, bool) {
	if c, ok := e.established.Get(value); ok && c.snap == snap && c.pool == pool && c.envelope && now.Before(c.expires) {
		if c.tracking {
			e.store.Seen(pool.Name, c.session, c.hostID, now)
		}
		return Decision{Outcome: OutcomePinned, Pool: pool.Name, Hosts: c.hosts, OverrideList: c.overrideList, HostID: c.hostID,
			SetHeaders: [][2]string{{ks.Name, c.session}}, EnvelopeToken: value, EnvelopeValue: c.session}, true
	}
	v := judgeEnvelope(snap, pool, value, now)
	var d Decision
	switch v.outcome {
	case OutcomeNew:
		return Decision{}, false
	case OutcomeRejected:
		return Decision{Outcome: OutcomeRejected, Reason: v.reason, Pool: pool.Name, Status: 503, Body: StrictEnvelopeBody}, true
	case OutcomeRebound:
		d = e.place(pool, v.sess.ID, OutcomeRebound, v.reason, now)
	default:
		d = Decision{Outcome: OutcomePinned, Pool: pool.Name, Hosts: overrideList(pool.placement(), v.sess.ID, v.host, pool.OverrideListLen), HostID: v.host.ID}
	}
	if pool.LoadFactor > 0 {
		e.store.Seen(pool.Name, v.sess.ID, d.HostID, now)
	}
	d.SetHeaders = [][2]string{{ks.Name, v.sess.ID}}
	d.EnvelopeToken, d.EnvelopeValue = value, v.sess.ID
	if d.Outcome == OutcomePinned {
		until := v.sess.ExpiresAt
		if deadline, ok := pool.Draining[d.HostID]; ok && deadline.Before(until) {
			until = deadline
		}
		d.OverrideList = strings.Join(d.Hosts, ",")
		e.established.Add(strings.Clone(value), establishedEntry{snap: snap, pool: pool, expires: until, hosts: d.Hosts, overrideList: d.OverrideList,
			hostID: d.HostID, session: strings.Clone(v.sess.ID), tracking: pool.LoadFactor > 0, envelope: true})
	}
	return d, true
}

// judgeEnvelope is what an upstream session header's value means under a
// pool: an envelope of this pool within its absolute timeout, pinned to its
// host or, that host gone, re-bound or rejected; anything else a new
// session (the value is not ours, or the session is over). It changes
// nothing.
func judgeEnvelope(snap *Snapshot, pool *Pool, value string, now time.Time) verdict {
	sess, err := snap.Codec.Verify(value, now)
	v := verdict{sess: sess, err: err, outcome: OutcomeNew}
	switch {
	case err != nil:
		// Not a token, forged, or past its exp (the session's end).
		v.reason = ReasonInvalidCookie
		return v
	case !sess.Envelope || sess.Pool != pool.Name:
		v.reason = ReasonInvalidCookie
		return v
	case !now.Before(sess.Start.Add(pool.AbsoluteTimeout)):
		// A lowered absolute timeout ends sessions whose envelopes are
		// still valid.
		v.reason = ReasonExpired
		return v
	}
	bound, found := pool.boundHost(sess)
	v.host, v.reason = pool.liveHost(bound, found, now)
	v.settle(pool)
	return v
}

// envelope returns the response's upstream session header value as the
// client is to see it: the token the request came with when the upstream
// repeats the value that token carries (a client holds one session id),
// else a new envelope binding value to the host that served; ok false when
// the value is to be learned instead (too long to wrap) or cannot be bound.
func (e *Engine) envelope(d *Decision, value, served string) (string, bool) {
	if d.EnvelopeToken != "" && value == d.EnvelopeValue {
		return d.EnvelopeToken, true
	}
	if len(value) > MaxEnvelopedValue {
		return "", false
	}
	snap := e.snap.Load()
	p, ok := snap.byName[d.Pool]
	if !ok {
		return "", false
	}
	host, ok := p.Hosts.LookupAddress(served)
	if !ok {
		if host, ok = p.Hosts.Lookup(d.HostID); !ok {
			return "", false
		}
	}
	now := e.now()
	sess := Session{ID: value, Start: now, IssuedAt: now, ExpiresAt: now.Add(p.AbsoluteTimeout), Pool: p.Name, Envelope: true}
	if p.Mode == ModeVerified {
		hosts := overrideList(p.placement(), value, host, p.OverrideListLen)
		sess.Host, sess.Primary = strings.Join(hosts, ","), base64.StdEncoding.EncodeToString([]byte(hosts[0]))
	} else {
		sess.Host = host.ID
	}
	token, err := snap.Codec.Sign(sess, now)
	if err != nil {
		return "", false
	}
	if p.LoadFactor > 0 {
		// The session exists from here on: bounded loads count it.
		e.store.Seen(p.Name, value, host.ID, now)
	}
	return token, true
}
