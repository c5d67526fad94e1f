package affinity

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
