package affinity

import (
	"slices"
	"strings"
)

// Build turns a validated configuration and its keys into a snapshot.
func (c *Config) Build(keys *Keyring) *Snapshot {
	s := &Snapshot{Codec: NewTokenCodec(keys), byName: map[string]*Pool{}, MaxSessions: c.Store.MaxSessions, Redis: c.Store.Redis}
	for _, pc := range c.Pools {
		specs := make([]HostSpec, len(pc.Hosts))
		for i, h := range pc.Hosts {
			specs[i] = HostSpec{Name: h.Name, Address: h.Address, Weight: 1}
			if h.Weight != nil {
				specs[i].Weight = uint32(*h.Weight)
			}
			if h.DrainingUntil != nil {
				specs[i].DrainingUntil = *h.DrainingUntil
			}
		}
		p := &Pool{
			Name: pc.Name,
			Mode: Mode(pc.Mode),
			Cookie: CookieSpec{
				Name:     pc.Cookie.Name,
				Path:     pc.Cookie.Path,
				Domain:   pc.Cookie.Domain,
				Secure:   *pc.Cookie.Secure,
				HTTPOnly: *pc.Cookie.HTTPOnly,
				SameSite: sameSite(pc.Cookie.SameSite),
				Lifetime: Lifetime(pc.Cookie.Lifetime),
			},
			Strict:          pc.Strict,
			Failback:        pc.Failback,
			IdleTimeout:     pc.Session.IdleTimeout,
			Discovery:       pc.Discovery.build(),
			Health:          pc.Health.policy(),
			AbsoluteTimeout: pc.Session.AbsoluteTimeout,
			RefreshInterval: pc.Session.RefreshInterval,
		}
		p.setHosts(specs)
		if pc.BoundedLoad != nil {
			p.LoadFactor = *pc.BoundedLoad.Factor
		}
		if l := pc.Load; l != nil {
			p.Load = &LoadPolicy{Source: LoadSource{Admins: strings.Join(l.EnvoyAdmins, ","), Cluster: l.Cluster, Interval: l.Interval},
				StaleAfter: l.StaleAfter, Factor: *l.Factor}
		}
		p.KeySources = make([]KeySourceSpec, len(pc.KeySources))
		for i, ks := range pc.KeySources {
			kind, _ := kindOf(KeySource(ks.Type)) // validated
			spec := &p.KeySources[i]
			*spec = KeySourceSpec{Type: KeySource(ks.Type), Name: ks.Name, TrustedHops: ks.TrustedHops, Envelope: ks.Envelope == EnvelopeSigned, kind: kind, traits: kind.traits()}
			kind.attach(p, spec)
		}
		p.ReboundHeader, p.SuccessorHeader = pc.UpstreamHeaders.Rebound, pc.UpstreamHeaders.Successor
		p.Output = OutputHeaders{Header: pc.Output.Header, StatefulSession: pc.Output.StatefulSessionHeader}
		p.setClientHeaders()
		for _, name := range p.removeUnrouted {
			if !slices.Contains(s.clientHeaders, name) {
				s.clientHeaders = append(s.clientHeaders, name)
			}
		}
		p.OverrideListLen, p.MatchAll = pc.OverrideHosts, pc.matchAll
		s.Pools = append(s.Pools, p)
		s.byName[p.Name] = p
	}
	return s
}

func sameSite(s string) SameSite {
	switch strings.ToLower(s) {
	case "strict":
		return SameSiteStrict
	case "none":
		return SameSiteNone
	}
	return SameSiteLax
}

// build is the runtime form of a discovery block (nil: none).
func (d *DiscoveryConfig) build() *Discovery {
	if d == nil {
		return nil
	}
	s := &Discovery{Interval: d.Interval, DrainTimeout: d.DrainTimeout}
	if e := d.Envoy; e != nil {
		s.Kind, s.Envoy = DiscoveryEnvoy, EnvoyDiscovery{Admin: e.Admin, Cluster: e.Cluster}
	}
	if n := d.DNS; n != nil {
		s.Kind, s.DNS = DiscoveryDNS, DNSDiscovery{Name: n.Name, Port: n.Port, SRV: n.SRV, Server: n.Server}
	}
	return s
}

// policy is the runtime form of a health block.
func (h *HealthConfig) policy() HealthPolicy {
	var out HealthPolicy
	if h == nil {
		return out
	}
	if p := h.Passive; p != nil {
		out.Passive = &PassiveHealth{Backoff: p.Backoff, MaxBackoff: p.MaxBackoff, Status5xx: p.Status5xx, Window: p.Window, MaxDownPercent: *p.MaxDownPercent}
	}
	if a := h.Active; a != nil {
		out.Active = &ActiveHealth{Path: a.Path, Interval: a.Interval, Timeout: a.Timeout,
			UnhealthyThreshold: a.UnhealthyThreshold, HealthyThreshold: a.HealthyThreshold}
	}
	return out
}
