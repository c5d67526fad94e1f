package affinity

import (
	"time"
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

// StoreConfig sizes the in-memory session store and, with Redis, shares
// what is not in the cookie with the other replicas.
type StoreConfig struct {
	// MaxSessions is how many sessions are tracked at most (the least
	// recently active are dropped first).
	MaxSessions int `yaml:"max_sessions"`
	// Redis, when set, is the store the replicas share: key bindings,
	// active-session counts and the operator's drains. Without it each
	// replica remembers on its own.
	Redis *RedisConfig `yaml:"redis"`
}

// RedisConfig names the Redis deployment the replicas share and how to use it.
type RedisConfig struct {
	// Mode is single (default), sentinel or cluster.
	Mode string `yaml:"mode"`
	// Addresses are host:port of the server (single), of the Sentinels, or
	// of some nodes of the Cluster.
	Addresses []string `yaml:"addresses"`
	// MasterName is the Sentinel master set (sentinel mode).
	MasterName string `yaml:"master_name"`
	// DB is the database number (not in cluster mode).
	DB int `yaml:"db"`
	// Username is the ACL user, or UsernameFile the file holding it.
	Username     string `yaml:"username"`
	UsernameFile string `yaml:"username_file"`
	// PasswordFile holds the password (never inline in this file).
	PasswordFile string `yaml:"password_file"`
	// TLS, when set, encrypts the connections.
	TLS *RedisTLSConfig `yaml:"tls"`
	// KeyPrefix starts every key, so deployments can share a server
	// (default "envoy-affinity:").
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds each request's wait for Redis (default 5ms); past it
	// the replica answers from its local store.
	Timeout time.Duration `yaml:"timeout"`
	// TouchInterval is how often the fleet pushes back the expiry of a
	// binding in use (default: a quarter of the shortest idle timeout).
	TouchInterval time.Duration `yaml:"touch_interval"`
	// SyncInterval is how often active-session counts are exchanged and
	// the operator's drains read (default 1s).
	SyncInterval time.Duration `yaml:"sync_interval"`
}

// RedisTLSConfig is TLS to Redis: the CA that signs the servers, and a
// client certificate when the servers require one. Relative paths are
// read from the configuration file's folder.
type RedisTLSConfig struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// Redis modes.
const (
	RedisSingle   = "single"
	RedisSentinel = "sentinel"
	RedisCluster  = "cluster"
)

// Redis defaults.
const (
	DefaultRedisKeyPrefix    = "envoy-affinity:"
	DefaultRedisTimeout      = 5 * time.Millisecond
	DefaultRedisSyncInterval = time.Second
)

// DiscoveryConfig names where a pool's hosts come from when they are not
// listed in the file: Envoy's admin API or DNS (one of them).
type DiscoveryConfig struct {
	Envoy *EnvoyDiscoveryConfig `yaml:"envoy"`
	DNS   *DNSDiscoveryConfig   `yaml:"dns"`
	// Interval is how often the hosts are read (default 2s).
	Interval time.Duration `yaml:"interval"`
	// DrainTimeout is how long a host discovery reports as draining keeps
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
	// application's own session cookie, learned from its responses),
	// upstream_header, query or client_address: one of KeySourceTypes.
	Type string `yaml:"type"`
	// Name is the header, cookie or query parameter (header, app_cookie,
	// upstream_header, query).
	Name string `yaml:"name"`
	// TrustedHops (client_address): 0 takes the source address; n > 0
	// takes the address n entries left of the last one of
	// x-forwarded-for (which Envoy appended), as Envoy's
	// xff_num_trusted_hops: n does.
	TrustedHops int `yaml:"trusted_hops"`
	// Envelope (upstream_header): "signed" replaces the value the upstream
	// sets with a signed token that carries it and the host that issued
	// it; the value is restored before the request reaches the upstream.
	// Nothing is stored, and a client cannot choose the host. Empty: the
	// value is learned in the store.
	Envelope string `yaml:"envelope"`
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

// LoadConfig reads each host's requests in flight (Envoy's rq_active)
// from the admin API of every Envoy in front of the pool, for placing new
// sessions.
type LoadConfig struct {
	// EnvoyAdmins are the Envoys' admin addresses (host:port or
	// http://host:port); their counts are summed per host. Default: the
	// pool's discovery.envoy.admin.
	EnvoyAdmins []string `yaml:"envoy_admins"`
	// Cluster is the Envoy cluster of the pool's hosts (default:
	// discovery.envoy.cluster, else the pool's name).
	Cluster string `yaml:"cluster"`
	// Interval is how often each admin API is read (default 1s).
	Interval time.Duration `yaml:"interval"`
	// StaleAfter: a reading older than this is not used (default 5 ×
	// interval).
	StaleAfter time.Duration `yaml:"stale_after"`
	// Factor: a new session skips a host whose load exceeds factor × the
	// pool's mean load + 1 (default 1.25).
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
	// Failback sends a session that failed over (its host could not be
	// reached and the successor served it) back to its host once the host
	// is back. Off by default: the session is re-bound to the host that
	// served it and stays there, where its data now is.
	Failback bool `yaml:"failback"`
	// BoundedLoad, when present, caps hosts' active sessions (factor 1.25
	// unless given).
	BoundedLoad *BoundedLoadConfig `yaml:"bounded_load"`
	// Load, when present, places new sessions by the hosts' requests in
	// flight as the Envoys in front of the pool count them.
	Load   *LoadConfig  `yaml:"load"`
	Cookie CookieConfig `yaml:"cookie"`
	// KeySources are where a request's session key is read from, in order;
	// the first that has one wins. Default: our cookie only.
	KeySources []KeySourceConfig `yaml:"key_sources"`
	// UpstreamHeaders name optional request headers that tell the
	// application about re-binds and successors (off when empty).
	UpstreamHeaders UpstreamHeadersConfig `yaml:"upstream_headers"`
	// Output names request headers that carry the decision to Envoy
	// besides the metadata (opaque mode only; off when empty).
	Output OutputConfig `yaml:"output"`
	// Discovery, when set, reads the hosts from Envoy or DNS instead of Hosts.
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

// HealthConfig turns on the service's own view of host health, on top of
// what discovery says.
type HealthConfig struct {
	// Passive marks a host down when Envoy had to serve its session
	// elsewhere (the primary could not be reached), or after Status5xx
	// answers with a 5xx status within Window.
	Passive *PassiveHealthConfig `yaml:"passive"`
	// Active checks each host over HTTP.
	Active *ActiveHealthConfig `yaml:"active"`
}

// PassiveHealthConfig: how long a failed host stays down. The backoff
// doubles each time the host goes down again, up to MaxBackoff, and starts
// over once the host has stayed up for MaxBackoff.
type PassiveHealthConfig struct {
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// Status5xx is how many 5xx answers within Window mark the host down
	// (0: 5xx answers do not count).
	Status5xx int           `yaml:"status_5xx"`
	Window    time.Duration `yaml:"window"`
	// MaxDownPercent caps the share of the pool's hosts passive signals
	// may hold down at once (at least one host), as Envoy's outlier
	// detection caps ejections: any client can cause 5xx answers and
	// failed connections, so passive signals alone must not empty a pool.
	MaxDownPercent *int `yaml:"max_down_percent"`
}

// ActiveHealthConfig checks hosts with GET Path.
type ActiveHealthConfig struct {
	Path               string        `yaml:"path"`
	Interval           time.Duration `yaml:"interval"`
	Timeout            time.Duration `yaml:"timeout"`
	UnhealthyThreshold int           `yaml:"unhealthy_threshold"`
	HealthyThreshold   int           `yaml:"healthy_threshold"`
}
