package affinity

import "strings"

// Upstream is what happened to a decided request upstream, as Envoy reports
// it in the response phase.
type Upstream struct {
	// Served is the host that served the request (ip:port), "" when Envoy
	// did not say.
	Served string
	// Status is the response's HTTP status (0 when unknown).
	Status int
	// SetCookies are the values of the response's Set-Cookie headers.
	SetCookies []string
	// Headers reads the response's other headers (the upstream's session
	// header); may be nil.
	Headers Headers
	// Pool, Cluster and RequestCookies name the pool as a Request does and
	// carry the request's Cookie headers, and Marked says whether Envoy
	// marked the response as served elsewhere than on the session's
	// primary. They are read only for a response without a decision: one
	// of a session Envoy routed by itself.
	Pool, Cluster  string
	RequestCookies []string
	Marked         bool
	// Key and Primary are a keyed decision's stored key and the primary
	// it named (ip:port), as the request phase left them in Envoy's
	// metadata: a marked response of a keyed session re-binds the key.
	Key, Primary string
}

// Reply is what the response must carry back to the client.
type Reply struct {
	// SetCookie is the Set-Cookie value to add ("" for none).
	SetCookie string
	// SetHeaders are response headers to set, over the upstream's (name,
	// value): the upstream's session header in its envelope.
	SetHeaders [][2]string
	// Rebound is ReasonServedElsewhere when the session was re-bound to the
	// host that really served it, else ReasonNone; Pool names its pool.
	Rebound Reason
	Pool    string
}

// WantsResponse reports whether the decision needs to hear of the response
// (Engine.Respond): there is a cookie to set or one to learn. Otherwise
// Envoy need not send the response phase at all.
func (d *Decision) WantsResponse() bool {
	return d.SetCookie != "" || d.LearnCookie != "" || d.LearnHeader != "" || d.EnvelopeHeader != ""
}

// Respond takes what happened to a request decided as d, or (d nil) to a
// request of a session Envoy routed by itself (up.Marked: Envoy marked it
// as served elsewhere than on the primary), and returns what the response
// must carry. Everything the response means is judged
// here:
//   - a failed-over session (its token's primary is not the host that
//     served) is re-bound to the host that served, so that it stays there
//     when the primary comes back, unless the pool fails back;
//   - the application's session cookie, when the response sets it, is
//     learned for the host that served;
//   - a request served by another host than its primary (Envoy's retry: the
//     primary could not be reached) is a failure of the primary for passive
//     health, and the session is re-bound to the host that served it in this
//     same response, so its next request goes there directly;
//   - a 5xx answer counts against the host that served it.
func (e *Engine) Respond(d *Decision, up Upstream) Reply {
	if d == nil {
		return e.failedOver(up)
	}
	reply := Reply{SetCookie: d.SetCookie}
	if d.Placement != "" {
		// The response has come: the session counts under its key, if
		// the response started one (learned or wrapped below).
		defer e.store.Unseen(d.Pool, d.Placement)
	}
	if d.EnvelopeHeader != "" && up.Headers != nil {
		if v, ok := up.Headers.Get(d.EnvelopeHeader); ok && strings.TrimSpace(v) != "" {
			v = strings.TrimSpace(v)
			if token, ok := e.envelope(d, v, up.Served); ok {
				reply.SetHeaders = append(reply.SetHeaders, [2]string{d.EnvelopeHeader, token})
			} else if up.Served != "" {
				// Too long to wrap: learned, as without an envelope.
				e.learnKey(d.Pool, SourceUpstreamHeader, v, up.Served)
			}
		}
	}
	if up.Served == "" {
		return reply
	}
	if d.LearnCookie != "" {
		for _, sc := range up.SetCookies {
			pair, _, _ := strings.Cut(sc, ";")
			name, value, ok := strings.Cut(pair, "=")
			if ok && strings.TrimSpace(name) == d.LearnCookie {
				e.learnKey(d.Pool, SourceAppCookie, strings.TrimSpace(value), up.Served)
			}
		}
	}
	if d.LearnHeader != "" && up.Headers != nil {
		if v, ok := up.Headers.Get(d.LearnHeader); ok {
			e.learnKey(d.Pool, SourceUpstreamHeader, strings.TrimSpace(v), up.Served)
		}
	}
	if len(d.Hosts) > 0 && up.Served != d.Hosts[0] {
		e.markDown(d.Pool, d.Hosts[0])
		switch {
		case d.SetCookie != "":
			if c, ok := e.rebind(d.Pool, d.Session, up.Served); ok {
				reply.SetCookie, reply.Rebound, reply.Pool = c, ReasonServedElsewhere, d.Pool
			}
		case d.Key != "":
			if e.rebindKey(d.Pool, d.Key, up.Served) {
				reply.Rebound, reply.Pool = ReasonServedElsewhere, d.Pool
			}
		}
	}
	if up.Status >= 500 && up.Status <= 599 {
		e.count5xx(d.Pool, up.Served)
	}
	return reply
}

// failedOver judges the response of a session Envoy routed by itself (the
// session's token named its hosts). Marked as served elsewhere than on the
// token's primary (the primary could not be reached, was unhealthy or left
// Envoy's cluster), the primary counts as failed for passive health and the
// session's cookie is re-issued for the host that served, so that the
// session stays there, where its data now is, when the primary comes back; a
// pool with failback keeps the token, and the session returns to the
// primary. A verified token without the p claim is re-issued with it.
func (e *Engine) failedOver(up Upstream) Reply {
	snap := e.snap.Load()
	p, ok := snap.Pool(up.Pool, up.Cluster)
	if !ok || p.Mode == ModeNative {
		return Reply{}
	}
	if up.Key != "" {
		return e.failedOverKey(p, up)
	}
	token, _ := RequestCookie(up.RequestCookies, p.Cookie.Name)
	v := judge(snap, p, token, e.now())
	if v.outcome != OutcomePinned && v.outcome != OutcomeRebound {
		return Reply{} // no session to keep: its next request decides
	}
	primary := v.host.Address
	if p.Mode == ModeVerified {
		primary, _, _ = strings.Cut(v.sess.Host, ",")
	}
	if p.Mode == ModeVerified && v.sess.Primary == "" && v.outcome == OutcomePinned && (!up.Marked || up.Served == "" || up.Served == primary) {
		// A verified token issued before tokens named their primary
		// (claim p): Envoy cannot tell its failovers and asks about every
		// response (its stateful_session marks them all). Re-issued with
		// p, bound where it is, once.
		if c, ok := e.rebind(p.Name, v.sess, primary); ok {
			return Reply{SetCookie: c, Pool: p.Name}
		}
		return Reply{}
	}
	if !up.Marked || up.Served == "" || primary == up.Served {
		return Reply{}
	}
	if primary != "" {
		e.markDown(p.Name, primary)
	}
	if p.Failback {
		return Reply{}
	}
	if c, ok := e.rebind(p.Name, v.sess, up.Served); ok {
		return Reply{SetCookie: c, Rebound: ReasonServedElsewhere, Pool: p.Name}
	}
	return Reply{}
}

// failedOverKey judges a marked response of a keyed session (its key and
// primary came back in Envoy's metadata): served elsewhere than on the
// primary, the primary counts as failed for passive health and the key is
// re-bound to the host that served, fleet-wide through the store, so that
// it stays there when the primary comes back; a pool with failback keeps
// the binding.
func (e *Engine) failedOverKey(p *Pool, up Upstream) Reply {
	if !up.Marked || up.Served == "" || up.Primary == "" || up.Served == up.Primary {
		return Reply{}
	}
	e.markDown(p.Name, up.Primary)
	if !p.Failback && e.rebindKey(p.Name, up.Key, up.Served) {
		return Reply{Rebound: ReasonServedElsewhere, Pool: p.Name}
	}
	return Reply{}
}

// rebindKey binds a stored key to the host at served (ip:port) after a
// request of its session was served there; false when that host is not one
// new sessions may go to, or the pool has failback (the key keeps its
// host).
func (e *Engine) rebindKey(pool, key, served string) bool {
	p, ok := e.snap.Load().byName[pool]
	if !ok || p.Failback {
		return false
	}
	host, ok := p.Active.LookupAddress(served)
	if !ok {
		return false
	}
	e.store.Bind(p.Name, key, host.ID, e.now())
	return true
}

// learnKey records that value, a key of a learned source (an application's
// session cookie, an upstream's session header), was set by a response the
// host at served (ip:port) answered; later requests carrying it go to that
// host. It reports whether it recorded anything: not when the pool in force
// no longer has a source of that type.
func (e *Engine) learnKey(pool string, source KeySource, value, served string) bool {
	p, ok := e.snap.Load().byName[pool]
	if !ok || value == "" {
		return false
	}
	ks, ok := p.source(source)
	if !ok {
		return false
	}
	host, ok := p.Hosts.LookupAddress(served)
	if !ok {
		return false
	}
	e.store.Bind(p.Name, ks.traits.prefix+value, host.ID, e.now())
	return true
}

// rebind re-binds a session whose request was served by another host than
// its primary: it returns the session's cookie bound to the host at served
// (ip:port), or false when that host is not one new sessions may go to.
func (e *Engine) rebind(pool string, sess Session, served string) (string, bool) {
	snap := e.snap.Load()
	p, ok := snap.byName[pool]
	if !ok || p.Mode == ModeNative {
		return "", false
	}
	host, ok := p.Active.LookupAddress(served)
	if !ok {
		return "", false
	}
	now := e.now()
	d := Decision{Outcome: OutcomeRebound, Pool: p.Name, Hosts: overrideList(p.placement(), sess.ID, host, p.OverrideListLen), HostID: host.ID}
	if p.LoadFactor > 0 {
		e.store.Seen(p.Name, sess.ID, host.ID, now)
	}
	e.issue(snap, p, sess, &d, now)
	return d.SetCookie, d.SetCookie != ""
}
