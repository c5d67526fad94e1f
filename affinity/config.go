package affinity

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the service's YAML configuration file.
type Config struct {
	// Keys names where the session-token signing keys are read from.
	Keys KeysConfig `yaml:"keys"`
	// Pools are the sets of hosts sessions are placed on.
	Pools []PoolConfig `yaml:"pools"`
	// Store is where active sessions are tracked.
	Store StoreConfig `yaml:"store"`
}

// StoreConfig sizes the in-memory session store.
type StoreConfig struct {
	// MaxSessions is how many sessions are tracked at most (the least
	// recently active are dropped first).
	MaxSessions int `yaml:"max_sessions"`
}

// DiscoveryConfig names where a pool's hosts come from when they are not
// listed in the file: Envoy's admin API or DNS (one of them).
type DiscoveryConfig struct {
	Envoy *EnvoyDiscoveryConfig `yaml:"envoy"`
	DNS   *DNSDiscoveryConfig   `yaml:"dns"`
	// Interval is how often the source is read (default 2s).
	Interval time.Duration `yaml:"interval"`
	// DrainTimeout is how long a host the source reports as draining keeps
	// its sessions (default 5m).
	DrainTimeout time.Duration `yaml:"drain_timeout"`
}

// EnvoyDiscoveryConfig reads a cluster's hosts, weights and health from the
// co-located Envoy's admin API (/clusters?format=json).
type EnvoyDiscoveryConfig struct {
	// Admin is Envoy's admin address, host:port or http://host:port.
	Admin string `yaml:"admin"`
	// Cluster is the Envoy cluster (default: the pool's name).
	Cluster string `yaml:"cluster"`
}

// DNSDiscoveryConfig resolves a name into the pool's hosts.
type DNSDiscoveryConfig struct {
	// Name is resolved for A and AAAA records (with Port), or for SRV
	// records when SRV is true (their ports and weights are used).
	Name string `yaml:"name"`
	Port int    `yaml:"port"`
	SRV  bool   `yaml:"srv"`
	// Server is a DNS server ip:port to ask instead of the system's.
	Server string `yaml:"server"`
}

// KeySourceConfig is one source of session keys.
type KeySourceConfig struct {
	// Type is cookie (our signed cookie), header, app_cookie (the
	// application's own session cookie, learned from its responses), query
	// or client_address.
	Type string `yaml:"type"`
	// Name is the header, cookie or query parameter (header, app_cookie, query).
	Name string `yaml:"name"`
	// TrustedHops (client_address): 0 takes the connection's address; n > 0
	// takes the n-th address from the right of x-forwarded-for, as Envoy's
	// xff_num_trusted_hops does.
	TrustedHops int `yaml:"trusted_hops"`
}

// UpstreamHeadersConfig names the headers added to requests for the
// application. Client-sent copies are always removed.
type UpstreamHeadersConfig struct {
	// Rebound carries why the session was moved: host-left,
	// draining-deadline, overloaded, expired, idle.
	Rebound string `yaml:"rebound"`
	// Successor carries the name of the host the session moves to if its
	// own leaves, so the application can replicate session data there.
	Successor string `yaml:"successor"`
}

// OutputConfig names request headers the decision is written to besides the
// envoy.lb dynamic metadata, for platforms whose Envoy routes by a header:
// Envoy Gateway's endpointOverride (override_host reading a header) and
// Istio's persistent-session-header (stateful_session reading a header).
// The service writes them on every request of the pool, over any copy the
// client sent, and removes the client's copy from a request it leaves to
// Envoy's load balancer: a client never chooses its host.
type OutputConfig struct {
	// Header is set to the override list "ip:port,ip:port", primary first.
	Header string `yaml:"header"`
	// StatefulSessionHeader is set to base64 of the primary's "ip:port",
	// as Envoy's envoy.http.stateful_session.header session state reads it.
	StatefulSessionHeader string `yaml:"stateful_session_header"`
}

// BoundedLoadConfig caps each host's active sessions for new placements.
type BoundedLoadConfig struct {
	// Factor c: no new session goes to a host whose active sessions would
	// exceed ⌈c × mean⌉. At least 1.0; 0 turns the cap off.
	Factor *float64 `yaml:"factor"`
}

// KeysConfig says where the signing keys are: a file (relative paths are
// relative to the config file) or an environment variable, never inline.
type KeysConfig struct {
	File string `yaml:"file"`
	Env  string `yaml:"env"`
	// SignDelay is how long a key that appears in a reload is published
	// (JWKS) before it signs, so Envoy's cached key set has it first. Keys
	// present at start sign at once.
	SignDelay *time.Duration `yaml:"sign_delay"`
}

// PoolConfig is one pool: its hosts and its session cookie.
type PoolConfig struct {
	// Name matches the Envoy cluster the requests are routed to. With a
	// single pool it may be left out: that pool takes every request.
	Name string `yaml:"name"`
	// Mode is how sessions are enforced: verified (default), opaque, native.
	Mode string `yaml:"mode"`
	// Strict answers 503 to a session whose host is gone instead of moving
	// it to its successor.
	Strict bool `yaml:"strict"`
	// BoundedLoad, when present, caps hosts' active sessions (factor 1.25
	// unless given).
	BoundedLoad *BoundedLoadConfig `yaml:"bounded_load"`
	Cookie      CookieConfig       `yaml:"cookie"`
	// KeySources are where a request's session key is read from, in order;
	// the first that has one wins. Default: our cookie only.
	KeySources []KeySourceConfig `yaml:"key_sources"`
	// UpstreamHeaders name optional request headers that tell the
	// application about re-binds and successors (off when empty).
	UpstreamHeaders UpstreamHeadersConfig `yaml:"upstream_headers"`
	// Output names request headers that carry the decision to Envoy
	// besides the metadata (opaque mode only; off when empty).
	Output OutputConfig `yaml:"output"`
	// Discovery, when set, takes the hosts from a source instead of Hosts.
	Discovery *DiscoveryConfig `yaml:"discovery"`
	// Health turns on the service's own health checking (passive, active).
	Health *HealthConfig `yaml:"health"`
	// OverrideHosts is how many hosts Envoy is given, primary first: 2
	// (primary, successor) by default; Envoy's retries walk the list.
	OverrideHosts int `yaml:"override_hosts"`

	// matchAll records that the name was left out.
	matchAll bool
	Session  SessionConfig `yaml:"session"`
	Hosts    []HostConfig  `yaml:"hosts"`
}

// CookieConfig is the session cookie's name and attributes.
type CookieConfig struct {
	Name     string `yaml:"name"`
	Path     string `yaml:"path"`
	Domain   string `yaml:"domain"`
	Secure   *bool  `yaml:"secure"`
	HTTPOnly *bool  `yaml:"http_only"`
	SameSite string `yaml:"same_site"`
	Lifetime string `yaml:"lifetime"`
}

// SessionConfig holds session lifetimes.
type SessionConfig struct {
	// AbsoluteTimeout is how long a session lasts from its start.
	AbsoluteTimeout time.Duration `yaml:"absolute_timeout"`
	// RefreshInterval is a token's lifetime (its exp): when it passes, the
	// service sees the session again and re-issues the token.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// IdleTimeout: a session is active while the service saw it within
	// this (bounded loads count active sessions).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// HostConfig is one upstream host.
type HostConfig struct {
	Address string `yaml:"address"`
	Name    string `yaml:"name"`
	Weight  *int   `yaml:"weight"`
	// DrainingUntil puts the host in the draining state: no new session is
	// placed there, its sessions stay until this time and then move on.
	DrainingUntil *time.Time `yaml:"draining_until"`
}

// Defaults applied where the file is silent.
const (
	DefaultPoolName        = "default"
	DefaultCookieName      = "affinity"
	DefaultAbsoluteTimeout = 24 * time.Hour
	DefaultRefreshInterval = 5 * time.Minute
	DefaultSignDelay       = 60 * time.Second
	DefaultIdleTimeout     = 30 * time.Minute
	DefaultLoadFactor      = 1.25
	MaxWeight              = 10000
)

var (
	cookieNameRE = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")
	// headerNameRE is an HTTP token in lower case, as Envoy keys headers.
	headerNameRE = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9a-z]+$")
	hostNameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)

// ParseConfig decodes and validates a configuration. Every problem found is
// returned at once, each as "file:line: field: reason".
func ParseConfig(file string, data []byte) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, yamlError(file, err)
	}
	var cfg Config
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, yamlError(file, err)
	}
	v := &validator{file: file, lines: map[string]int{}}
	recordLines(&root, "", v.lines)
	cfg.applyDefaults()
	cfg.validate(v)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return &cfg, nil
}

// yamlError prefixes yaml.v3's "line N: ..." messages with the file name.
func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, len(te.Errors))
		for i, e := range te.Errors {
			errs[i] = fmt.Errorf("%s:%s", file, strings.TrimPrefix(e, "line "))
		}
		return errors.Join(errs...)
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		return fmt.Errorf("%s:%s", file, rest)
	}
	return fmt.Errorf("%s: %s", file, msg)
}

// recordLines maps every field path ("pools[0].hosts[1].address") to the
// line it is written on.
func recordLines(n *yaml.Node, path string, out map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			recordLines(c, path, out)
		}
	case yaml.MappingNode:
		out[path] = n.Line
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			out[p] = n.Content[i].Line
			recordLines(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		out[path] = n.Line
		for i, c := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			out[p] = c.Line
			recordLines(c, p, out)
		}
	}
}

type validator struct {
	file  string
	lines map[string]int
	errs  []error
}

// errorf records a problem with the field at path, located at the line of
// the field or, when the field is absent, of its nearest written parent.
func (v *validator) errorf(path, format string, args ...any) {
	line, p := 0, path
	for {
		if l, ok := v.lines[p]; ok {
			line = l
			break
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		v.errs = append(v.errs, fmt.Errorf("%s:%d: %s: %s", v.file, line, path, msg))
	} else {
		v.errs = append(v.errs, fmt.Errorf("%s: %s: %s", v.file, path, msg))
	}
}

func (c *Config) applyDefaults() {
	if c.Keys.SignDelay == nil {
		c.Keys.SignDelay = ptr(DefaultSignDelay)
	}
	if c.Store.MaxSessions == 0 {
		c.Store.MaxSessions = DefaultMaxSessions
	}
	if len(c.Pools) == 1 && c.Pools[0].Name == "" {
		c.Pools[0].Name = DefaultPoolName
		c.Pools[0].matchAll = true
	}
	for i := range c.Pools {
		p := &c.Pools[i]
		if p.Mode == "" {
			p.Mode = string(ModeVerified)
		}
		ck := &p.Cookie
		if ck.Name == "" {
			ck.Name = DefaultCookieName
		}
		if ck.Path == "" {
			ck.Path = "/"
		}
		if ck.Secure == nil {
			ck.Secure = ptr(true)
		}
		if ck.HTTPOnly == nil {
			ck.HTTPOnly = ptr(true)
		}
		if ck.SameSite == "" {
			ck.SameSite = "lax"
		}
		if ck.Lifetime == "" {
			ck.Lifetime = string(LifetimeSession)
		}
		if p.Session.AbsoluteTimeout == 0 {
			p.Session.AbsoluteTimeout = DefaultAbsoluteTimeout
		}
		if p.Session.RefreshInterval == 0 {
			p.Session.RefreshInterval = min(DefaultRefreshInterval, p.Session.AbsoluteTimeout)
		}
		if p.Session.IdleTimeout == 0 {
			p.Session.IdleTimeout = DefaultIdleTimeout
		}
		if len(p.KeySources) == 0 {
			p.KeySources = []KeySourceConfig{{Type: string(SourceCookie)}}
		}
		for j := range p.KeySources {
			// Header names are case-insensitive (Envoy sends them lower
			// case); cookie and query names keep their case.
			if p.KeySources[j].Type == string(SourceHeader) {
				p.KeySources[j].Name = strings.ToLower(p.KeySources[j].Name)
			}
		}
		p.UpstreamHeaders.Rebound = strings.ToLower(p.UpstreamHeaders.Rebound)
		p.UpstreamHeaders.Successor = strings.ToLower(p.UpstreamHeaders.Successor)
		if p.OverrideHosts == 0 {
			p.OverrideHosts = OverrideHosts
		}
		if h := p.Health; h != nil {
			if ph := h.Passive; ph != nil {
				ph.Backoff = cmp.Or(ph.Backoff, 5*time.Second)
				ph.MaxBackoff = cmp.Or(ph.MaxBackoff, 2*time.Minute)
				ph.Window = cmp.Or(ph.Window, 10*time.Second)
			}
			if ah := h.Active; ah != nil {
				ah.Path = cmp.Or(ah.Path, "/healthz")
				ah.Interval = cmp.Or(ah.Interval, 2*time.Second)
				ah.Timeout = cmp.Or(ah.Timeout, time.Second)
				ah.UnhealthyThreshold = cmp.Or(ah.UnhealthyThreshold, 2)
				ah.HealthyThreshold = cmp.Or(ah.HealthyThreshold, 1)
			}
		}
		if d := p.Discovery; d != nil {
			if d.Interval == 0 {
				d.Interval = 2 * time.Second
			}
			if d.DrainTimeout == 0 {
				d.DrainTimeout = 5 * time.Minute
			}
			if d.Envoy != nil && d.Envoy.Cluster == "" {
				d.Envoy.Cluster = p.Name
			}
		}
		if p.BoundedLoad != nil && p.BoundedLoad.Factor == nil {
			p.BoundedLoad.Factor = ptr(DefaultLoadFactor)
		}
	}
}

func ptr[T any](v T) *T { return &v }

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
	p.validateKeySources(v, at)
	p.validateOutput(v, at)
	if h := p.Health; h != nil {
		if ph := h.Passive; ph != nil && (ph.Backoff <= 0 || ph.MaxBackoff < ph.Backoff || ph.Status5xx < 0 || ph.Window <= 0) {
			v.errorf(at+".health.passive", "backoff > 0, max_backoff ≥ backoff, status_5xx ≥ 0 and window > 0 are needed")
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

func (p *PoolConfig) validateKeySources(v *validator, at string) {
	seen := map[string]bool{}
	for j, ks := range p.KeySources {
		kat := fmt.Sprintf("%s.key_sources[%d]", at, j)
		switch KeySource(ks.Type) {
		case SourceCookie, SourceClientAddress:
			if ks.Name != "" && ks.Type == string(SourceCookie) {
				v.errorf(kat+".name", "the cookie source is named by pools[].cookie.name")
			}
		case SourceHeader, SourceAppCookie, SourceQuery:
			if ks.Name == "" || !cookieNameRE.MatchString(ks.Name) {
				v.errorf(kat+".name", "%s needs a valid name, got %q", ks.Type, ks.Name)
			}
			if ks.Type == string(SourceAppCookie) && ks.Name == strings.ToLower(p.Cookie.Name) {
				v.errorf(kat+".name", "%q is the session cookie itself", ks.Name)
			}
		default:
			v.errorf(kat+".type", "%q is not one of cookie, header, app_cookie, query, client_address", ks.Type)
		}
		if ks.TrustedHops < 0 || ks.TrustedHops > 0 && ks.Type != string(SourceClientAddress) {
			v.errorf(kat+".trusted_hops", "only client_address takes trusted_hops, at least 0")
		}
		id := ks.Type + "/" + ks.Name
		if seen[id] {
			v.errorf(kat, "listed twice")
		}
		seen[id] = true
	}
	if Mode(p.Mode) == ModeNative && (len(p.KeySources) != 1 || p.KeySources[0].Type != string(SourceCookie)) {
		v.errorf(at+".key_sources", "native mode pins sessions with Envoy's cookie only")
	}
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
		if ks.Type == string(SourceHeader) {
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

// LoadFile reads, validates and builds the configuration at path, with the
// keys it names. getenv reads environment variables (os.Getenv in the
// binary). prev is the configuration in force (nil on the first load): keys
// it already had keep their signing time, new ones wait keys.sign_delay.
func LoadFile(path string, getenv func(string) string, prev *Snapshot, now time.Time) (*Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	keys, err := cfg.loadKeys(path, getenv)
	if err != nil {
		return nil, err
	}
	var prevKeys *Keyring
	if prev != nil {
		prevKeys = prev.Codec.Keys()
	}
	keys.Carry(prevKeys, now, *cfg.Keys.SignDelay)
	return cfg.Build(keys), nil
}

// KeysFile is the path of the keys file, resolved against the config file's
// folder; empty when the keys come from the environment.
func (c *Config) KeysFile(configPath string) string {
	if c.Keys.File == "" || filepath.IsAbs(c.Keys.File) {
		return c.Keys.File
	}
	return filepath.Join(filepath.Dir(configPath), c.Keys.File)
}

func (c *Config) loadKeys(configPath string, getenv func(string) string) (*Keyring, error) {
	if c.Keys.Env != "" {
		text := getenv(c.Keys.Env)
		if text == "" {
			return nil, fmt.Errorf("%s: keys.env: environment variable %s is empty or unset", configPath, c.Keys.Env)
		}
		ring, err := ParseKeyring(text)
		if err != nil {
			return nil, fmt.Errorf("environment variable %s: %w", c.Keys.Env, err)
		}
		return ring, nil
	}
	file := c.KeysFile(configPath)
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: keys.file: %w", configPath, err)
	}
	ring, err := ParseKeyring(string(data))
	if err != nil {
		return nil, prefixLines(file, err)
	}
	return ring, nil
}

// prefixLines puts the file name before each joined error.
func prefixLines(file string, err error) error {
	var errs []error
	for _, line := range strings.Split(err.Error(), "\n") {
		errs = append(errs, fmt.Errorf("%s: %s", file, line))
	}
	return errors.Join(errs...)
}

// Build turns a validated configuration and its keys into a snapshot.
func (c *Config) Build(keys *Keyring) *Snapshot {
	s := &Snapshot{Codec: NewTokenCodec(keys), byName: map[string]*Pool{}, MaxSessions: c.Store.MaxSessions}
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
			IdleTimeout:     pc.Session.IdleTimeout,
			Discovery:       pc.Discovery,
			Health:          pc.Health,
			AbsoluteTimeout: pc.Session.AbsoluteTimeout,
			RefreshInterval: pc.Session.RefreshInterval,
		}
		p.setHosts(specs)
		if pc.BoundedLoad != nil {
			p.LoadFactor = *pc.BoundedLoad.Factor
		}
		for _, ks := range pc.KeySources {
			p.KeySources = append(p.KeySources, KeySourceSpec{Type: KeySource(ks.Type), Name: ks.Name, TrustedHops: ks.TrustedHops})
		}
		p.ReboundHeader, p.SuccessorHeader = pc.UpstreamHeaders.Rebound, pc.UpstreamHeaders.Successor
		p.Output = OutputHeaders{Header: pc.Output.Header, StatefulSession: pc.Output.StatefulSessionHeader}
		for _, name := range [2]string{p.Output.Header, p.Output.StatefulSession} {
			if name != "" && !slices.Contains(s.outputHeaders, name) {
				s.outputHeaders = append(s.outputHeaders, name)
			}
		}
		p.OverrideHosts, p.MatchAll = pc.OverrideHosts, pc.matchAll
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
