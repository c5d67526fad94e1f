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
}

// Reply is what the response must carry back to the client.
type Reply struct {
	// SetCookie is the Set-Cookie value to add ("" for none).
	SetCookie string
	// Rebound is ReasonServedElsewhere when the session was re-bound to the
	// host that really served it, else ReasonNone.
	Rebound Reason
}

// WantsResponse reports whether the decision needs to hear of the response
// (Engine.Respond): there is a cookie to set or one to learn. Otherwise
// Envoy need not send the response phase at all.
func (d *Decision) WantsResponse() bool { return d.SetCookie != "" || d.LearnCookie != "" }

// Respond takes what happened to a request decided as d and returns what
// the response must carry. Everything the response means is judged here:
//   - the application's session cookie, when the response sets it, is
//     learned for the host that served;
//   - a request served by another host than its primary (Envoy's retry: the
//     primary could not be reached) is a failure of the primary for passive
//     health, and the session is re-bound to the host that served it in this
//     same response, so its next request goes there directly;
//   - a 5xx answer counts against the host that served it.
func (e *Engine) Respond(d *Decision, up Upstream) Reply {
	reply := Reply{SetCookie: d.SetCookie}
	if up.Served == "" {
		return reply
	}
	if d.LearnCookie != "" {
		for _, sc := range up.SetCookies {
			pair, _, _ := strings.Cut(sc, ";")
			name, value, ok := strings.Cut(pair, "=")
			if ok && strings.TrimSpace(name) == d.LearnCookie {
				e.learn(d.Pool, strings.TrimSpace(value), up.Served)
			}
		}
	}
	if len(d.Hosts) > 0 && up.Served != d.Hosts[0] {
		e.markDown(d.Pool, d.Hosts[0])
		if d.SetCookie != "" {
			if c, ok := e.rebind(d.Pool, d.Session, up.Served); ok {
				reply.SetCookie, reply.Rebound = c, ReasonServedElsewhere
			}
		}
	}
	if up.Status >= 500 && up.Status <= 599 {
		e.count5xx(d.Pool, up.Served)
	}
	return reply
}

// learn records that the application's session cookie value was set by a
// response the host at served (ip:port) answered; later requests carrying
// the cookie go to that host. It reports whether it recorded anything.
func (e *Engine) learn(pool, value, served string) bool {
	p, ok := e.snap.Load().byName[pool]
	if !ok || value == "" {
		return false
	}
	if _, ok := p.source(SourceAppCookie); !ok {
		return false
	}
	host, ok := p.Hosts.LookupAddress(served)
	if !ok {
		return false
	}
	e.store.Seen(p.Name, prefixAppCookie+value, host.ID, e.now())
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
