package affinity

// SourceCost is what the requests one key source keys cost in ext_proc
// messages (the request's headers, and its response's when the decision
// asks for them), in the pool's mode.
type SourceCost struct {
	Type KeySource
	// Name is what the source reads ("" for the client's address);
	// Envelope, whether its values travel in a signed envelope.
	Name     string
	Envelope bool
	// New is a request that starts a session: no token or an invalid one,
	// a placed key the pool has not seen, or (learned sources) the request
	// whose response teaches the key.
	New int
	// Known is a request of an established session.
	Known int
	// Refresh is the request after a token's refresh interval (cookie
	// sessions outside native mode), 0 when there is none.
	Refresh int
	// EnvoyAlone: Envoy routes established sessions without the service
	// (Known is 0).
	EnvoyAlone bool
}

// Costs are the ext_proc messages per request of each of the pool's key
// sources, in order. A response another host served than the session's
// primary costs one more message (the re-bind), in every mode but native.
func (p *Pool) Costs() []SourceCost {
	// Decisions that do not come from a learned key ask for the response
	// when the pool learns a key from it or wraps one in an envelope;
	// envelopes are wrapped whatever the request carried.
	learns := p.learning.cookie != "" || p.learning.header != ""
	wraps := p.learning.envelope != ""
	phase := func(b bool) int {
		if b {
			return 1
		}
		return 0
	}
	out := make([]SourceCost, 0, len(p.KeySources))
	for i := range p.KeySources {
		ks := &p.KeySources[i]
		c := SourceCost{Type: ks.Type, Name: ks.Name, Envelope: ks.Envelope}
		switch {
		case p.Mode == ModeNative:
			// Envoy's own cookie: the service places new sessions and
			// skips their responses.
			c.New, c.EnvoyAlone = 1, true
		case ks.traits.binding == bindToken:
			c.New, c.Refresh = 2, 2
			if p.EnvoyVerifies() {
				c.EnvoyAlone = true
			} else {
				c.Known = 1 + phase(learns || wraps)
			}
		case ks.Envelope && ks.Name == p.learning.envelope:
			c.New = 2
			if p.EnvoyVerifies() && !p.keyedBy(bindToken) {
				c.EnvoyAlone = true
			} else {
				c.Known = 2
			}
		case ks.traits.binding == bindLearned:
			c.New, c.Known = 2, 1+phase(wraps)
		default:
			c.New = 1 + phase(learns || wraps)
			c.Known = c.New
		}
		out = append(out, c)
	}
	return out
}
