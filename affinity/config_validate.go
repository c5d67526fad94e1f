package affinity

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

var (
	cookieNameRE = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")
	// headerNameRE is an HTTP token in lower case, as Envoy keys headers.
	headerNameRE = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9a-z]+$")
	hostNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)

func (c *Config) validate(v *validator) {
	switch {
	case c.Keys.File == "" && c.Keys.Env == "":
		v.errorf("keys", "name the signing keys with file or env (never inline)")
	case c.Keys.File != "" && c.Keys.Env != "":
		v.errorf("keys", "set file or env, not both")
	}
	if *c.Keys.SignDelay < 0 {
		v.errorf("keys.sign_delay", "must not be negative")
	}
	if c.Store.MaxSessions < 0 {
		v.errorf("store.max_sessions", "must be positive")
	}
	if r := c.Store.Redis; r != nil {
		r.validate(v, c.Pools)
	}
	if len(c.Pools) == 0 {
		v.errorf("pools", "at least one pool is needed")
	}
	names := map[string]bool{}
	for i := range c.Pools {
		p := &c.Pools[i]
		at := fmt.Sprintf("pools[%d]", i)
		switch {
		case p.Name == "":
			v.errorf(at+".name", "a name is needed when there are several pools (the Envoy cluster name)")
		case names[p.Name]:
			v.errorf(at+".name", "pool %q is defined twice", p.Name)
		}
		names[p.Name] = true
		p.validate(v, at)
	}
}

func (p *PoolConfig) validate(v *validator, at string) {
	switch Mode(p.Mode) {
	case ModeVerified, ModeOpaque, ModeNative:
	default:
		v.errorf(at+".mode", "%q is not one of verified, opaque, native", p.Mode)
	}
	ck := &p.Cookie
	if !cookieNameRE.MatchString(ck.Name) {
		v.errorf(at+".cookie.name", "%q is not a valid cookie name", ck.Name)
	}
	if !strings.HasPrefix(ck.Path, "/") || strings.ContainsAny(ck.Path, ";\r\n") {
		v.errorf(at+".cookie.path", "%q must start with / and hold no ';'", ck.Path)
	}
	if strings.ContainsAny(ck.Domain, "; \t\r\n") {
		v.errorf(at+".cookie.domain", "%q is not a domain", ck.Domain)
	}
	switch strings.ToLower(ck.SameSite) {
	case "lax", "strict":
	case "none":
		if !*ck.Secure {
			v.errorf(at+".cookie.same_site", "none needs secure: true (browsers drop the cookie otherwise)")
		}
	default:
		v.errorf(at+".cookie.same_site", "%q is not one of lax, strict, none", ck.SameSite)
	}
	switch Lifetime(ck.Lifetime) {
	case LifetimeSession, LifetimePermanent:
	default:
		v.errorf(at+".cookie.lifetime", "%q is not one of session, permanent", ck.Lifetime)
	}
	if p.Session.AbsoluteTimeout < time.Second {
		v.errorf(at+".session.absolute_timeout", "%v is too short (at least 1s)", p.Session.AbsoluteTimeout)
	}
	if p.Session.IdleTimeout < time.Second {
		v.errorf(at+".session.idle_timeout", "%v is too short (at least 1s)", p.Session.IdleTimeout)
	}
	if p.BoundedLoad != nil {
		if f := *p.BoundedLoad.Factor; f != 0 && (f < 1 || f > 100) {
			v.errorf(at+".bounded_load.factor", "%v: use a factor from 1.0 (strict balance) upwards, or 0 to turn it off", f)
		}
	}
	if l := p.Load; l != nil {
		l.validate(v, at+".load")
	}
	p.validateKeySources(v, at)
	p.validateOutput(v, at)
	if h := p.Health; h != nil {
		if ph := h.Passive; ph != nil && (ph.Backoff <= 0 || ph.MaxBackoff < ph.Backoff || ph.Status5xx < 0 || ph.Window <= 0) {
			v.errorf(at+".health.passive", "backoff > 0, max_backoff ≥ backoff, status_5xx ≥ 0 and window > 0 are needed")
		}
		if ph := h.Passive; ph != nil && (*ph.MaxDownPercent < 0 || *ph.MaxDownPercent > 100) {
			v.errorf(at+".health.passive.max_down_percent", "%d is not a percentage (0 to 100)", *ph.MaxDownPercent)
		}
		if ah := h.Active; ah != nil {
			switch {
			case ah.Interval < 100*time.Millisecond || ah.Timeout <= 0 || ah.Timeout > ah.Interval:
				v.errorf(at+".health.active", "interval ≥ 100ms and 0 < timeout ≤ interval are needed")
			case ah.UnhealthyThreshold < 1 || ah.HealthyThreshold < 1:
				v.errorf(at+".health.active", "thresholds must be at least 1")
			case !strings.HasPrefix(ah.Path, "/"):
				v.errorf(at+".health.active.path", "%q must start with /", ah.Path)
			}
			if p.Discovery != nil && p.Discovery.Envoy != nil {
				v.errorf(at+".health.active", "hosts from Envoy carry Envoy's health checks; an active check of the service's own is for file and DNS hosts")
			}
		}
	}
	if p.OverrideHosts < 1 || p.OverrideHosts > MaxRank {
		v.errorf(at+".override_hosts", "%d is out of range 1..%d", p.OverrideHosts, MaxRank)
	}
	for field, name := range map[string]string{"rebound": p.UpstreamHeaders.Rebound, "successor": p.UpstreamHeaders.Successor} {
		if name != "" && (!cookieNameRE.MatchString(name) || strings.HasPrefix(name, ":")) {
			v.errorf(at+".upstream_headers."+field, "%q is not a header name", name)
		}
	}
	switch r := p.Session.RefreshInterval; {
	case r < time.Second:
		v.errorf(at+".session.refresh_interval", "%v is too short (at least 1s)", r)
	case r > p.Session.AbsoluteTimeout:
		v.errorf(at+".session.refresh_interval", "%v is longer than absolute_timeout %v", r, p.Session.AbsoluteTimeout)
	}
	switch d := p.Discovery; {
	case d == nil && len(p.Hosts) == 0:
		v.errorf(at+".hosts", "at least one host is needed (or a discovery source)")
	case d != nil && len(p.Hosts) > 0:
		v.errorf(at+".discovery", "hosts come from the file or from discovery, not both")
	case d != nil && (d.Envoy == nil) == (d.DNS == nil):
		v.errorf(at+".discovery", "name one source: envoy or dns")
	case d != nil && d.Envoy != nil && d.Envoy.Admin == "":
		v.errorf(at+".discovery.envoy.admin", "Envoy's admin address is needed")
	case d != nil && d.DNS != nil && d.DNS.Name == "":
		v.errorf(at+".discovery.dns.name", "a name to resolve is needed")
	case d != nil && d.DNS != nil && !d.DNS.SRV && (d.DNS.Port < 1 || d.DNS.Port > 65535):
		v.errorf(at+".discovery.dns.port", "A/AAAA records need a port (1..65535)")
	case d != nil && d.Interval < 100*time.Millisecond:
		v.errorf(at+".discovery.interval", "%v is too short (at least 100ms)", d.Interval)
	}
	addrs, ids := map[string]bool{}, map[string]bool{}
	for j, h := range p.Hosts {
		hat := fmt.Sprintf("%s.hosts[%d]", at, j)
		ap, err := netip.ParseAddrPort(h.Address)
		switch {
		case err != nil || ap.Port() == 0:
			v.errorf(hat+".address", "%q is not ip:port (Envoy overrides by address; IPv6 as [::1]:80)", h.Address)
		case addrs[ap.String()]:
			v.errorf(hat+".address", "%s is listed twice", h.Address)
		default:
			addrs[ap.String()] = true
		}
		if h.Name != "" && !hostNameRE.MatchString(h.Name) {
			v.errorf(hat+".name", "%q: use letters, digits, '.', '_' or '-' (at most 63)", h.Name)
		}
		if id := NewHost(h.Name, h.Address, 1).ID; ids[id] {
			v.errorf(hat+".name", "host %q is listed twice", id)
		} else {
			ids[id] = true
		}
		if h.DrainingUntil != nil && h.DrainingUntil.IsZero() {
			v.errorf(hat+".draining_until", "give a time such as 2026-11-27T18:00:00Z")
		}
		if h.Weight != nil && (*h.Weight < 1 || *h.Weight > MaxWeight) {
			v.errorf(hat+".weight", "%d is out of range 1..%d", *h.Weight, MaxWeight)
		}
	}
}

func (l *LoadConfig) validate(v *validator, at string) {
	if len(l.EnvoyAdmins) == 0 {
		v.errorf(at+".envoy_admins", "name the admin address of each Envoy in front of the pool (only a pool with discovery.envoy has a default)")
	}
	seen := map[string]bool{}
	for i, a := range l.EnvoyAdmins {
		addr := a
		if _, rest, ok := strings.Cut(a, "://"); ok && (strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://")) {
			addr = strings.TrimRight(rest, "/")
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" || strings.ContainsAny(addr, ",/ ") {
			v.errorf(fmt.Sprintf("%s.envoy_admins[%d]", at, i), "%q is not host:port or http://host:port", a)
		} else if seen[addr] {
			v.errorf(fmt.Sprintf("%s.envoy_admins[%d]", at, i), "%q is listed twice: its counts would be summed twice", a)
		}
		seen[addr] = true
	}
	if l.Interval < 100*time.Millisecond {
		v.errorf(at+".interval", "%v is too short (at least 100ms)", l.Interval)
	}
	if l.StaleAfter < l.Interval {
		v.errorf(at+".stale_after", "%v is shorter than interval %v: no reading would ever be used", l.StaleAfter, l.Interval)
	}
	if f := *l.Factor; f < 1 || f > 100 {
		v.errorf(at+".factor", "%v: use a factor from 1.0 (strict balance) upwards", f)
	}
}

// validateKeySources checks each entry by the rules of its kind, and the
// options a kind does not take alike for every kind.
func (p *PoolConfig) validateKeySources(v *validator, at string) {
	seen := map[string]bool{}
	for j := range p.KeySources {
		ks := &p.KeySources[j]
		kat := fmt.Sprintf("%s.key_sources[%d]", at, j)
		var tr keyTraits
		if kind, ok := kindOf(KeySource(ks.Type)); ok {
			tr = kind.traits()
			kind.validate(ks, p, v, kat)
		} else {
			v.errorf(kat+".type", "%q is not one of %s", ks.Type, typesWith(func(keyTraits) bool { return true }))
		}
		if ks.Envelope != "" && (ks.Envelope != EnvelopeSigned || !tr.envelope) {
			v.errorf(kat+".envelope", "only %s takes an envelope, and it is %q", typesWith(func(t keyTraits) bool { return t.envelope }), EnvelopeSigned)
		}
		if ks.TrustedHops < 0 || ks.TrustedHops > 0 && !tr.trustedHops {
			v.errorf(kat+".trusted_hops", "only %s takes trusted_hops, at least 0", typesWith(func(t keyTraits) bool { return t.trustedHops }))
		}
		id := ks.Type + "/" + ks.Name
		if seen[id] {
			v.errorf(kat, "listed twice")
		}
		seen[id] = true
	}
	// Envoy's stateful_session cookie stands in for our token: no other
	// key can reach the service in native mode.
	if Mode(p.Mode) == ModeNative && (len(p.KeySources) != 1 || !bindsByToken(p.KeySources[0].Type)) {
		v.errorf(at+".key_sources", "native mode pins sessions with Envoy's cookie only")
	}
}

// bindsByToken tells whether a type's keys are our session tokens.
func bindsByToken(t string) bool {
	kind, ok := kindOf(KeySource(t))
	return ok && kind.traits().binding == bindToken
}

// outputReserved are request headers Envoy or the service reads for
// something else: a decision written there would break the request.
var outputReserved = map[string]bool{
	"host": true, "cookie": true, "content-length": true, "content-type": true, "transfer-encoding": true,
	"connection": true, "keep-alive": true, "proxy-connection": true, "te": true, "upgrade": true,
	"x-forwarded-for": true, "x-request-id": true,
}

func (p *PoolConfig) validateOutput(v *validator, at string) {
	outputs := [2][2]string{{"header", p.Output.Header}, {"stateful_session_header", p.Output.StatefulSessionHeader}}
	others := map[string]string{}
	if n := p.UpstreamHeaders.Rebound; n != "" {
		others[n] = "upstream_headers.rebound"
	}
	if n := p.UpstreamHeaders.Successor; n != "" {
		others[n] = "upstream_headers.successor"
	}
	for j, ks := range p.KeySources {
		if kind, ok := kindOf(KeySource(ks.Type)); ok && kind.traits().clientHeader {
			others[ks.Name] = fmt.Sprintf("key_sources[%d] (the client sends it)", j)
		}
	}
	for _, o := range outputs {
		field, name := o[0], o[1]
		if name == "" {
			continue
		}
		path := at + ".output." + field
		switch {
		case strings.HasPrefix(name, ":"):
			v.errorf(path, "%q is a pseudo-header; name a request header", name)
		case !headerNameRE.MatchString(name):
			v.errorf(path, "%q is not a header name in lower case (Envoy keys headers in lower case; letters, digits and !#$%%&'*+-.^_`|~)", name)
		case outputReserved[name]:
			v.errorf(path, "%q is read by Envoy or the service for something else", name)
		case strings.HasPrefix(name, "x-envoy-"):
			v.errorf(path, "%q: Envoy does not let an ext_proc set x-envoy-* headers", name)
		case others[name] != "":
			v.errorf(path, "%q is also %s", name, others[name])
		}
		others[name] = "output." + field
		if Mode(p.Mode) != ModeOpaque {
			v.errorf(path, "needs mode opaque (the pool's mode is %s): in verified and native modes Envoy routes established sessions without asking the service, so the header Envoy reads would be the one the client sent", p.Mode)
		}
	}
}

func (r *RedisConfig) validate(v *validator, pools []PoolConfig) {
	const at = "store.redis"
	switch r.Mode {
	case RedisSingle, RedisSentinel, RedisCluster:
	default:
		v.errorf(at+".mode", "%q is not one of single, sentinel, cluster", r.Mode)
	}
	switch {
	case len(r.Addresses) == 0:
		v.errorf(at+".addresses", "name the server, the Sentinels or nodes of the Cluster as host:port")
	case r.Mode == RedisSingle && len(r.Addresses) > 1:
		v.errorf(at+".addresses", "a single server has one address; several are Sentinels (mode: sentinel) or Cluster nodes (mode: cluster)")
	}
	for i, a := range r.Addresses {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			v.errorf(fmt.Sprintf("%s.addresses[%d]", at, i), "%q is not host:port", a)
		}
	}
	if r.Mode == RedisSentinel && r.MasterName == "" {
		v.errorf(at+".master_name", "sentinel mode needs the master set's name")
	}
	if r.Mode != RedisSentinel && r.MasterName != "" {
		v.errorf(at+".master_name", "only sentinel mode has a master set")
	}
	if r.DB < 0 || (r.DB != 0 && r.Mode == RedisCluster) {
		v.errorf(at+".db", "must be 0 or more, and 0 in cluster mode")
	}
	if r.Username != "" && r.UsernameFile != "" {
		v.errorf(at+".username", "set username or username_file, not both")
	}
	if r.Timeout < 0 || r.Timeout > 10*time.Second {
		v.errorf(at+".timeout", "%s: give a positive duration of a few milliseconds", r.Timeout)
	}
	if r.SyncInterval < 10*time.Millisecond {
		v.errorf(at+".sync_interval", "%s is below 10ms", r.SyncInterval)
	}
	for i := range pools {
		if idle := pools[i].Session.IdleTimeout; r.TouchInterval <= 0 || r.TouchInterval > idle/2 {
			v.errorf(at+".touch_interval", "%s must be positive and at most half of pools[%d]'s idle timeout (%s), or bindings in use expire", r.TouchInterval, i, idle)
		}
	}
	if t := r.TLS; t != nil && (t.CertFile == "") != (t.KeyFile == "") {
		v.errorf(at+".tls", "cert_file and key_file go together")
	}
	if strings.ContainsAny(r.KeyPrefix, " \r\n") {
		v.errorf(at+".key_prefix", "%q has white space", r.KeyPrefix)
	}
}
