package affinity

import (
	"errors"
	"fmt"
	"time"
)

// Explanation says where a request with a given cookie or key would go under
// the configuration in force, and why. Explaining changes nothing: no
// session is counted, cached or re-bound.
type Explanation struct {
	Pool string `json:"pool"`
	Mode Mode   `json:"mode"`
	// Input is what was explained: "cookie", "session" (a session id) or a
	// key source type such as "header".
	Input string `json:"input"`
	// Token describes the session cookie's token (cookie input only).
	Token *TokenExplanation `json:"token,omitempty"`
	// Outcome and Reason are the decision's, as the metrics name them;
	// for a session id, Outcome is "placed": where a session with this id
	// goes.
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
	// Host is the host the request would reach ("" when a new session's
	// random id decides it).
	Host     string   `json:"host,omitempty"`
	Address  string   `json:"address,omitempty"`
	Override []string `json:"override,omitempty"`
	// Order is the session's placement order over the hosts new sessions
	// may use: its successors, with each host's load.
	Order []RankedHost `json:"order,omitempty"`
	// Why lists the steps of the decision in words.
	Why []string `json:"why"`
}

// TokenExplanation is what a session token holds.
type TokenExplanation struct {
	Valid     bool      `json:"valid"`
	Error     string    `json:"error,omitempty"`
	Session   string    `json:"session,omitempty"`
	Hosts     string    `json:"hosts,omitempty"`
	Start     time.Time `json:"start,omitzero"`
	IssuedAt  time.Time `json:"issued_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// RankedHost is one host in a session's placement order.
type RankedHost struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Active is the host's active sessions; Limit the bounded-load cap for
	// one more (0: no cap).
	Active int  `json:"active"`
	Limit  int  `json:"limit,omitempty"`
	Full   bool `json:"full,omitempty"`
}

// Explain tells what the pool would do with a request carrying the session
// cookie value cookie, or (cookie empty) the key: a session id for a pool
// keyed by our cookie, else a key of the pool's first other key source.
func (e *Engine) Explain(pool, cookie, key string) (Explanation, error) {
	snap := e.snap.Load()
	p, ok := snap.byName[pool]
	if !ok {
		return Explanation{}, fmt.Errorf("%w: %q", ErrUnknownPool, pool)
	}
	if (cookie == "") == (key == "") {
		return Explanation{}, errors.New("give either a cookie or a key")
	}
	x := Explanation{Pool: p.Name, Mode: p.Mode}
	now := e.now()
	if p.Hosts.Len() == 0 {
		x.Outcome, x.Reason = OutcomePassThrough.String(), ReasonNoHosts.String()
		x.Why = append(x.Why, "the pool has no host: Envoy's own load balancing decides")
		return x, nil
	}
	if cookie != "" {
		e.explainCookie(snap, p, cookie, now, &x)
		return x, nil
	}
	for _, ks := range p.KeySources {
		tr := ks.traits
		if tr.binding == bindToken {
			continue
		}
		x.Input = string(ks.Type)
		e.explainKey(p, tr.binding, tr.prefix+ks.kind.canonical(key), now, &x)
		return x, nil
	}
	x.Input = "session"
	x.Outcome = "placed"
	x.Why = append(x.Why, "a session with this id is placed on its first choice with room; the order below is where it moves when hosts leave")
	e.explainPlacement(p, key, now, &x)
	return x, nil
}

func (e *Engine) explainCookie(snap *Snapshot, p *Pool, cookie string, now time.Time, x *Explanation) {
	x.Input = "cookie"
	v := judge(snap, p, cookie, now)
	t := &TokenExplanation{Valid: v.err == nil}
	if v.err != nil {
		t.Error = v.err.Error()
	}
	if v.err == nil || errors.Is(v.err, ErrTokenExpired) {
		t.Session, t.Hosts, t.Start, t.IssuedAt, t.ExpiresAt = v.sess.ID, v.sess.Host, v.sess.Start, v.sess.IssuedAt, v.sess.ExpiresAt
	}
	x.Token = t
	x.Outcome, x.Reason = v.outcome.String(), v.reason.String()
	switch v.outcome {
	case OutcomeNew:
		x.Why = append(x.Why, "the token cannot keep its session ("+v.reason.String()+"): a new session with a random id is placed, so its host is not known in advance")
	case OutcomeRejected:
		x.Why = append(x.Why, "the session's host is gone ("+v.reason.String()+") and the pool is strict: 503 and the cookie is cleared")
	case OutcomeRebound:
		x.Why = append(x.Why, fmt.Sprintf("its host %q is gone (%s): the session moves to its first choice with room", v.host.ID, v.reason))
		e.explainPlacement(p, v.sess.ID, now, x)
	case OutcomePinned:
		if errors.Is(v.err, ErrTokenExpired) {
			x.Reason = ReasonExpired.String()
			x.Why = append(x.Why, "the token expired within the session's timeouts: it is refreshed, same session and host")
		} else {
			x.Why = append(x.Why, "the token is valid and names a host of the pool")
		}
		if d, ok := p.Draining[v.host.ID]; ok {
			x.Why = append(x.Why, "its host is draining: the session stays until "+d.UTC().Format(time.RFC3339))
		}
		x.stays(p, v.sess.ID, v.host)
		x.Order = e.ranked(p, v.sess.ID, now)
	}
}

func (e *Engine) explainKey(p *Pool, binding keyBinding, key string, now time.Time, x *Explanation) {
	bound, known := e.store.Binding(p.Name, key, now)
	v := judgeKey(p, binding, bound, known, now)
	x.Outcome, x.Reason = v.outcome.String(), v.reason.String()
	switch v.outcome {
	case OutcomePassThrough:
		x.Why = append(x.Why, "no host set this application cookie or session header (or its session went idle or ended): the next key source decides")
		return
	case OutcomePinned:
		x.Why = append(x.Why, fmt.Sprintf("the key was last seen on %q, still in the pool", v.host.ID))
		x.stays(p, key, v.host)
		x.Order = e.ranked(p, key, now)
		return
	case OutcomeRejected:
		x.Why = append(x.Why, fmt.Sprintf("the key's host %q is gone (%s) and the pool is strict: 503", v.host.ID, v.reason))
		return
	case OutcomeRebound:
		x.Why = append(x.Why, fmt.Sprintf("the key's host %q is gone (%s): it moves to its first choice with room", v.host.ID, v.reason))
	default:
		x.Why = append(x.Why, "the key is not known: it is placed on its first choice with room")
	}
	e.explainPlacement(p, key, now, x)
}

// explainPlacement fills in where a placement of key goes.
func (e *Engine) explainPlacement(p *Pool, key string, now time.Time, x *Explanation) {
	order, overloaded := e.choose(p, p.placement(), key, now)
	x.Host, x.Address = order[0].ID, order[0].Address
	for _, h := range order {
		x.Override = append(x.Override, h.Address)
	}
	x.Order = e.ranked(p, key, now)
	if overloaded {
		x.Why = append(x.Why, "its first choices are full (bounded loads): "+order[0].ID+" takes it")
		x.Reason = reasonOverloaded
	}
	if p.Active.Len() == 0 {
		x.Why = append(x.Why, "every host is draining: sessions are placed on draining hosts rather than nowhere")
	}
}

// stays fills in a session staying on host.
func (x *Explanation) stays(p *Pool, key string, host Host) {
	x.Host, x.Address = host.ID, host.Address
	x.Override = overrideList(p.placement(), key, host, p.OverrideListLen)
}

// ranked is key's placement order over the hosts new sessions may use, with
// their loads and the bounded-load cap.
func (e *Engine) ranked(p *Pool, key string, now time.Time) []RankedHost {
	hosts := p.placement()
	var rank [MaxRank]int
	n := hosts.Rank(sessionKey(key), rank[:])
	load := map[string]int{}
	e.store.Load(p.Name, now, load)
	limit := 0
	if p.LoadFactor > 0 {
		limit = loadCap(p.LoadFactor, hosts, load)
	}
	out := make([]RankedHost, n)
	for i := range n {
		h := hosts.At(rank[i])
		out[i] = RankedHost{ID: h.ID, Address: h.Address, Active: load[h.ID], Limit: limit, Full: limit > 0 && load[h.ID]+1 > limit}
	}
	return out
}
