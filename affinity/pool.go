package affinity

import (
	"strings"
	"time"
)

// DefaultOverrideListLen is how many hosts the override list (the hosts a
// decision hands to Envoy's override_host policy, primary first) holds by
// default: the primary and the successor an Envoy retry goes to when the
// primary cannot be reached. A pool may list up to MaxRank.
const DefaultOverrideListLen = 2

// Mode is how a pool's sessions are enforced.
type Mode string

// Modes.
const (
	// ModeVerified: the token names "primary,successor" as ip:port; Envoy's
	// jwt_authn verifies it and routes by it without asking the service.
	// The service sees new, expired, invalid and re-bound sessions only.
	ModeVerified Mode = "verified"
	// ModeOpaque: the token names the host by an opaque id; the service is
	// asked on every request.
	ModeOpaque Mode = "opaque"
	// ModeNative: Envoy's own stateful_session cookie pins sessions; the
	// service only places new ones and writes no cookie.
	ModeNative Mode = "native"
)

// Pool is a configured pool in force: its cookie, lifetimes and hosts.
type Pool struct {
	Name   string
	Mode   Mode
	Strict bool
	// Failback: a session that failed over keeps its token and returns to
	// its primary when the primary is back (off: it is re-bound to the
	// host that served it and stays there).
	Failback        bool
	Cookie          CookieSpec
	AbsoluteTimeout time.Duration
	RefreshInterval time.Duration
	IdleTimeout     time.Duration
	// LoadFactor c caps new placements at ⌈c × mean⌉ active sessions per
	// host; 0 is no cap.
	LoadFactor float64
	// Load places new sessions by the hosts' requests in flight (nil:
	// off).
	Load *LoadPolicy
	// KeySources are tried in order; the first with a key wins.
	KeySources []KeySourceSpec
	// ReboundHeader and SuccessorHeader name the request headers that tell
	// the application about re-binds and successors ("" = off).
	ReboundHeader, SuccessorHeader string
	// Output names the request headers decisions are also written to.
	Output OutputHeaders
	// OverrideListLen is the length of the override list (primary first).
	OverrideListLen int
	// MatchAll: the pool's name was left out, so it takes requests of every
	// cluster (a configuration with a single pool).
	MatchAll bool
	// Discovery is where the pool's hosts come from (nil: the hosts of the
	// file).
	Discovery *Discovery
	// Health is the service's own health checking.
	Health HealthPolicy
	// Specs are the hosts as the file or discovery lists them, before the service's
	// health view takes any out.
	Specs []HostSpec
	// Hosts are all the pool's hosts, draining ones included: a session
	// bound to any of them is recognised.
	Hosts *HostSet
	// Active are the hosts new sessions are placed on, and the successor
	// order draws from.
	Active *HostSet
	// Draining maps the ID of each draining host to its deadline.
	Draining map[string]time.Time

	// removeRouted and removeUnrouted are the client headers a decision of
	// the pool removes from the request: the headers the service sets for
	// the application, and with them the output headers when the decision
	// names no host (when it does, they are written over the client's).
	// Built once, shared read-only by the decisions.
	removeRouted, removeUnrouted []string
	// learning is what the decisions ask the response phase to read, set
	// up by the key sources.
	learning learning
}

// setClientHeaders lists the client headers the pool's decisions remove.
func (p *Pool) setClientHeaders() {
	p.removeRouted, p.removeUnrouted = nil, nil
	for _, name := range [...]string{p.ReboundHeader, p.SuccessorHeader} {
		if name != "" {
			p.removeRouted = append(p.removeRouted, name)
		}
	}
	p.removeUnrouted = append([]string(nil), p.removeRouted...)
	for _, name := range [...]string{p.Output.Header, p.Output.StatefulSession} {
		if name != "" {
			p.removeUnrouted = append(p.removeUnrouted, name)
		}
	}
}

// clientHeaders is what a decision of the pool removes from the request.
func (p *Pool) clientHeaders(routed bool) []string {
	if routed {
		return p.removeRouted
	}
	return p.removeUnrouted
}

// OutputHeaders names the request headers a pool's decisions are written to
// besides the envoy.lb metadata ("" = not written).
type OutputHeaders struct {
	// Header carries the override list "ip:port,ip:port", primary first
	// (Envoy's override_host policy with a header source).
	Header string
	// StatefulSession carries base64 of the primary's "ip:port" (Envoy's
	// stateful_session filter with header session state).
	StatefulSession string
}

// placement is the host set new and re-bound sessions are placed on: the
// active hosts, or all of them when every host is draining (a session on a
// draining host beats no session).
func (p *Pool) placement() *HostSet {
	if p.Active.Len() > 0 {
		return p.Active
	}
	return p.Hosts
}

// Snapshot is one configuration in force: immutable, swapped whole.
type Snapshot struct {
	Pools []*Pool
	Codec *TokenCodec
	// MaxSessions sizes the in-memory store (read when the engine starts).
	MaxSessions int
	// Redis is the shared store's configuration, its files' paths
	// resolved (nil: none; read when the service starts).
	Redis *RedisConfig
	// KeysFile is the keys file read (empty: the keys came from the
	// environment).
	KeysFile string
	byName   map[string]*Pool
	// clientHeaders are the client headers every pool removes: a request no
	// pool takes has the client's copies removed.
	clientHeaders []string
	// healthExpiry is when the first passive health hold ends (zero: none).
	healthExpiry time.Time
}

// IdleTimeout is the longest idle timeout of the pools: how long the store
// keeps a session counted.
func (s *Snapshot) IdleTimeout() time.Duration {
	var d time.Duration
	for _, p := range s.Pools {
		d = max(d, p.IdleTimeout)
	}
	return max(d, time.Second)
}

// Pool returns the pool for a request: the pool named by name (Envoy's
// grpc_service initial_metadata) if given, else the pool named like the
// request's Envoy cluster, else a pool configured without a name (which
// takes every cluster).
func (s *Snapshot) Pool(name, cluster string) (*Pool, bool) {
	if name != "" {
		p, ok := s.byName[name]
		return p, ok
	}
	if p, ok := s.byName[cluster]; ok {
		return p, true
	}
	if len(s.Pools) == 1 && s.Pools[0].MatchAll {
		return s.Pools[0], true
	}
	return nil, false
}

// liveHost checks a bound host: ReasonNone when it may still serve the
// session, else why not (it left the pool, or its drain deadline passed).
func (p *Pool) liveHost(h Host, found bool, now time.Time) (Host, Reason) {
	if !found {
		return h, ReasonHostLeft
	}
	if deadline, draining := p.Draining[h.ID]; draining && !now.Before(deadline) {
		return h, ReasonDraining
	}
	return h, ReasonNone
}

// boundHost is the pool's host the token names, if it is still in the pool.
func (p *Pool) boundHost(s Session) (Host, bool) {
	if p.Mode == ModeVerified {
		primary, _, _ := strings.Cut(s.Host, ",")
		return p.Hosts.LookupAddress(primary)
	}
	return p.Hosts.Lookup(s.Host)
}

// Discovery is where a pool's hosts come from when the file does not list
// them: Envoy's admin API or DNS. It is comparable, so a reload that leaves
// it alone can be told from one that changes it.
type Discovery struct {
	// Kind says which of Envoy and DNS is set.
	Kind  DiscoveryKind
	Envoy EnvoyDiscovery
	DNS   DNSDiscovery
	// Interval is how often the hosts are read.
	Interval time.Duration
	// DrainTimeout is how long a host discovery reports as draining keeps
	// its sessions.
	DrainTimeout time.Duration
}

// DiscoveryKind names a kind of discovery.
type DiscoveryKind string

// Discovery kinds.
const (
	DiscoveryEnvoy DiscoveryKind = "envoy"
	DiscoveryDNS   DiscoveryKind = "dns"
)

// EnvoyDiscovery reads a cluster's hosts, weights and health from Envoy's
// admin API.
type EnvoyDiscovery struct {
	Admin   string // host:port or http://host:port
	Cluster string
}

// DNSDiscovery resolves Name into hosts: A and AAAA records with Port, or SRV
// records (their own ports and weights). Server, when set, is the DNS
// server asked (ip:port).
type DNSDiscovery struct {
	Name   string
	Port   int
	SRV    bool
	Server string
}

// LoadPolicy places a pool's new sessions by its hosts' requests in
// flight, as the Envoys in front of it count them.
type LoadPolicy struct {
	Source LoadSource
	// StaleAfter: an older reading is not used (placement is then by
	// rendezvous order alone).
	StaleAfter time.Duration
	// Factor: a new session skips a host whose load exceeds Factor × the
	// pool's mean load + 1.
	Factor float64
}

// LoadSource is where a pool's load is read. It is comparable, so that a
// reload that leaves it alone keeps its reader running.
type LoadSource struct {
	// Admins are the Envoys' admin addresses, comma-separated (a list
	// would not be comparable; validation refuses commas in them).
	Admins   string
	Cluster  string
	Interval time.Duration
}

// AdminList is the Envoys' admin addresses.
func (s LoadSource) AdminList() []string { return strings.Split(s.Admins, ",") }

// HealthPolicy is the service's own view of host health, on top of what the
// discovery says; each part is off when nil.
type HealthPolicy struct {
	Passive *PassiveHealth
	Active  *ActiveHealth
}

// PassiveHealth marks a host down when Envoy had to serve its session
// elsewhere, or after Status5xx answers with a 5xx status within Window
// (0: 5xx answers do not count). A host stays down for Backoff, doubled
// each time it goes down again up to MaxBackoff, and starting over once it
// has stayed up for MaxBackoff.
type PassiveHealth struct {
	Backoff, MaxBackoff time.Duration
	Status5xx           int
	Window              time.Duration
	// MaxDownPercent of the pool's hosts (at least one) may be held down
	// by passive signals at once.
	MaxDownPercent int
}

// ActiveHealth checks every host with GET Path each Interval; a host turns
// unhealthy after UnhealthyThreshold failures in a row (a failure: no 2xx
// within Timeout) and healthy after HealthyThreshold successes.
type ActiveHealth struct {
	Path                                 string
	Interval, Timeout                    time.Duration
	UnhealthyThreshold, HealthyThreshold int
}
