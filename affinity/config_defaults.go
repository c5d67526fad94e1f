package affinity

import (
	"cmp"
	"strings"
	"time"
)

// Defaults applied where the file is silent.
const (
	DefaultPoolName        = "default"
	DefaultCookieName      = "affinity"
	DefaultAbsoluteTimeout = 24 * time.Hour
	DefaultRefreshInterval = 5 * time.Minute
	DefaultSignDelay       = 60 * time.Second
	DefaultIdleTimeout     = 30 * time.Minute
	DefaultLoadFactor      = 1.25
	// DefaultLoadInterval is how often a pool's load is read.
	DefaultLoadInterval = time.Second
	// DefaultStaleReadings is how many intervals a load reading is used.
	DefaultStaleReadings = 5
	// DefaultMaxDownPercent is Envoy's outlier detection default.
	DefaultMaxDownPercent = 10
	MaxWeight             = 10000
)

func (c *Config) applyDefaults() {
	if c.Keys.SignDelay == nil {
		c.Keys.SignDelay = ptr(DefaultSignDelay)
	}
	if c.Store.MaxSessions == 0 {
		c.Store.MaxSessions = DefaultMaxSessions
	}
	if r := c.Store.Redis; r != nil {
		r.Mode = cmp.Or(r.Mode, RedisSingle)
		r.KeyPrefix = cmp.Or(r.KeyPrefix, DefaultRedisKeyPrefix)
		r.Timeout = cmp.Or(r.Timeout, DefaultRedisTimeout)
		r.SyncInterval = cmp.Or(r.SyncInterval, DefaultRedisSyncInterval)
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
			if kind, ok := kindOf(KeySource(p.KeySources[j].Type)); ok && kind.traits().headerName {
				p.KeySources[j].Name = strings.ToLower(p.KeySources[j].Name)
			}
		}
		p.UpstreamHeaders.Rebound = strings.ToLower(p.UpstreamHeaders.Rebound)
		p.UpstreamHeaders.Successor = strings.ToLower(p.UpstreamHeaders.Successor)
		if p.OverrideHosts == 0 {
			p.OverrideHosts = DefaultOverrideListLen
		}
		if h := p.Health; h != nil {
			if ph := h.Passive; ph != nil {
				ph.Backoff = cmp.Or(ph.Backoff, 5*time.Second)
				ph.MaxBackoff = cmp.Or(ph.MaxBackoff, 2*time.Minute)
				ph.Window = cmp.Or(ph.Window, 10*time.Second)
				if ph.MaxDownPercent == nil {
					ph.MaxDownPercent = ptr(DefaultMaxDownPercent)
				}
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
		if l := p.Load; l != nil {
			l.applyDefaults(p)
		}
		if p.BoundedLoad != nil && p.BoundedLoad.Factor == nil {
			p.BoundedLoad.Factor = ptr(DefaultLoadFactor)
		}
	}
	if r := c.Store.Redis; r != nil && r.TouchInterval == 0 {
		// A quarter of the shortest idle timeout: each key in use costs
		// the fleet about one touch (and one re-read per replica) per
		// interval.
		for i, p := range c.Pools {
			if i == 0 || p.Session.IdleTimeout/4 < r.TouchInterval {
				r.TouchInterval = p.Session.IdleTimeout / 4
			}
		}
	}
}

// applyDefaults fills a load block from its pool: the Envoy discovery reads
// is the one counted by default.
func (l *LoadConfig) applyDefaults(p *PoolConfig) {
	var envoy *EnvoyDiscoveryConfig
	if p.Discovery != nil {
		envoy = p.Discovery.Envoy
	}
	if len(l.EnvoyAdmins) == 0 && envoy != nil && envoy.Admin != "" {
		l.EnvoyAdmins = []string{envoy.Admin}
	}
	if l.Cluster == "" {
		l.Cluster = p.Name
		if envoy != nil && envoy.Cluster != "" {
			l.Cluster = envoy.Cluster
		}
	}
	l.Interval = cmp.Or(l.Interval, DefaultLoadInterval)
	l.StaleAfter = cmp.Or(l.StaleAfter, DefaultStaleReadings*l.Interval)
	if l.Factor == nil {
		l.Factor = ptr(DefaultLoadFactor)
	}
}

func ptr[T any](v T) *T { return &v }
