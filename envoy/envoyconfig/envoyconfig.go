// Package envoyconfig writes what an Envoy a user already runs needs for
// one of envoy-affinity's pools: the pieces of envoy/<mode>.yaml (filters,
// routes, cluster fields, the service's clusters), with the values the
// service's configuration decides (cookie name, refresh interval, pool and
// cluster names, key sources), as one YAML document whose top-level keys
// say where each piece goes (see Pieces).
package envoyconfig

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

// The top-level keys of the generated document, one per piece.
const (
	// KeyHCM holds fields to set on the user's HTTP connection manager
	// (verified mode only); a list is appended to the user's.
	KeyHCM = "http_connection_manager"
	// KeyFilters holds the HTTP filters to insert, in order, just before
	// RouterFilter.
	KeyFilters = "http_filters"
	// KeyRoutes holds the routes that replace each of the user's routes to
	// the pool's cluster; the user's match is kept and ours added to it.
	KeyRoutes = "routes"
	// KeyCluster holds fields to set on the user's cluster of the pool's
	// hosts, the cluster it names.
	KeyCluster = "cluster"
	// KeyClusters holds the clusters to add: the service's.
	KeyClusters = "clusters"
)

// RouterFilter is the filter the inserted filters go before.
const RouterFilter = "envoy.filters.http.router"

// Default addresses Envoy reaches the service at: serve's own defaults.
const (
	DefaultGRPCAddress  = "127.0.0.1:9002"
	DefaultAdminAddress = "127.0.0.1:9003"
)

// tokenRounding is the slack the service allows on a token's lifetime (iat
// and exp are whole seconds): jwt_authn's max_lifetime is the refresh
// interval plus this, or Envoy would refuse tokens the service issued.
const tokenRounding = 2 * time.Second

// Options say which pool the pieces are for and where Envoy reaches the
// service.
type Options struct {
	// Pool names the pool; it may be left empty when there is one.
	Pool string
	// Cluster is the Envoy cluster of the pool's hosts. The service picks
	// a named pool by the cluster of the same name, so it is the pool's
	// name by default; a pool without a name takes every cluster, and
	// Cluster must say which one to attach to.
	Cluster string
	// GRPCAddress is host:port of the service's ext_proc listener as Envoy
	// reaches it (DefaultGRPCAddress when empty).
	GRPCAddress string
	// AdminAddress is host:port of its admin listener, where Envoy fetches
	// the JWKS in verified mode (DefaultAdminAddress when empty).
	AdminAddress string
	// ConfigName is how the output names the configuration file, in
	// comments ("the configuration" when empty).
	ConfigName string
}

//go:embed pieces.yaml.tmpl
var piecesText string

var pieces = template.Must(template.New("pieces").Funcs(template.FuncMap{
	"q":    quote,
	"list": quoteList,
}).Parse(piecesText))

// Pieces returns the YAML document of the pieces for the pool opts names,
// generated from the loaded configuration snap: those of the pool's
// EnvoyMode, so a verified pool whose sessions carry no token gets opaque
// mode's (ModeNote says why). A pool that writes output headers (Envoy
// Gateway, Istio) is refused: those platforms generate Envoy's
// configuration themselves.
func Pieces(snap *affinity.Snapshot, opts Options) ([]byte, error) {
	pool, err := ChoosePool(snap, opts.Pool)
	if err != nil {
		return nil, err
	}
	v, err := newView(snap, pool, opts)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := pieces.Execute(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ModeNote is what a user of pool p should know of the mode its pieces
// take, "" when it is the pool's own.
func ModeNote(p *affinity.Pool) string {
	if p.EnvoyMode() == p.Mode {
		return ""
	}
	return fmt.Sprintf("mode %s has Envoy verify session tokens, and this pool's sessions carry none (no cookie source, no upstream_header with envelope: signed): the service decides every request, as in mode %s, and envoy-config prints that mode's pieces; set mode: %s to say so", p.Mode, p.EnvoyMode(), p.EnvoyMode())
}

// ChoosePool is the pool named, or the only one.
func ChoosePool(snap *affinity.Snapshot, name string) (*affinity.Pool, error) {
	names := make([]string, len(snap.Pools))
	for i, p := range snap.Pools {
		if name == p.Name || name == "" && len(snap.Pools) == 1 {
			return p, nil
		}
		names[i] = p.Name
	}
	if name == "" {
		return nil, fmt.Errorf("the configuration has %d pools (%s): name one with -pool", len(names), strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("no pool %q in the configuration (it has %s)", name, strings.Join(names, ", "))
}

// view is what the template reads.
type view struct {
	// Mode is the mode of the pieces (the pool's EnvoyMode), PoolMode the
	// pool's own.
	Mode, PoolMode  affinity.Mode
	Config          string
	Pool            string // the audience: the pool's name, "default" unnamed
	Cluster         string
	Cookie          string
	CookiePath      string
	CookieRegex     string // native mode: the established route's Cookie header match
	RefreshInterval time.Duration
	AbsoluteTimeout time.Duration
	MaxLifetime     string
	// RequestAttributes and why the ext_proc asks for them.
	RequestAttributes []string
	AttributesWhy     string
	UpstreamHeaders   []string
	// SessionHeader is the upstream's session header whose envelope Envoy
	// verifies (a verified pool without our cookie), "" for the cookie.
	SessionHeader string
	// Hash is what the fallback hashes, HashWhat the same in words.
	Hash     affinity.FallbackHash
	HashWhat string
	// FailoverCookie: the failover ext_proc sends the request's cookies,
	// whose token a session Envoy routed alone is judged by.
	FailoverCookie bool
	LocalJWKS      bool
	JWKSURI        string
	AdminCluster   bool
	GRPC, Admin    endpoint
	MaxStreams     int
}

// endpoint is a service listener as an Envoy cluster reaches it.
type endpoint struct {
	Host string
	Port int
	// Type is STATIC for an IP address, STRICT_DNS for a name.
	Type string
}

func newView(snap *affinity.Snapshot, p *affinity.Pool, opts Options) (*view, error) {
	if p.Output.Header != "" || p.Output.StatefulSession != "" {
		return nil, fmt.Errorf("pool %q writes its decisions to request headers (pools[].output) for Envoy Gateway or Istio, which generate Envoy's configuration themselves: envoy-config does not cover them; see envoy/gateway-header.yaml, envoy/istio-session-header.yaml and examples/", p.Name)
	}
	v := &view{
		Mode:            p.EnvoyMode(),
		PoolMode:        p.Mode,
		Config:          oneLine(opts.ConfigName),
		Pool:            p.Name,
		Cookie:          p.Cookie.Name,
		CookiePath:      p.Cookie.Path,
		CookieRegex:     `(.*;\s*)?` + regexp.QuoteMeta(p.Cookie.Name) + `=.*`,
		RefreshInterval: p.RefreshInterval,
		MaxLifetime:     seconds(p.RefreshInterval + tokenRounding),
		MaxStreams:      extproc.MaxConcurrentStreams,
		AdminCluster:    p.EnvoyMode() == affinity.ModeVerified,
		FailoverCookie:  p.CookieSessions() || p.EnvoyMode() == affinity.ModeVerified,
	}
	if v.Config == "" {
		v.Config = "the configuration"
	}
	switch {
	case p.MatchAll && opts.Cluster == "":
		return nil, errors.New("the pool has no name, so it takes the requests of every Envoy cluster: name the cluster of its hosts with -cluster")
	case p.MatchAll:
		v.Cluster = opts.Cluster
	case opts.Cluster != "" && opts.Cluster != p.Name:
		return nil, fmt.Errorf("-cluster %q: the service picks pool %q by the Envoy cluster of the same name, so its hosts must be cluster %q (or rename the pool)", opts.Cluster, p.Name, p.Name)
	default:
		v.Cluster = p.Name
	}
	// The client's address costs Envoy an attribute on every request the
	// service sees: asked for only when a key source reads it.
	v.RequestAttributes = []string{extproc.ClusterAttribute}
	v.AttributesWhy = "The cluster selects the pool."
	if p.NeedsClientAddress() {
		v.RequestAttributes = append(v.RequestAttributes, extproc.SourceAttribute)
		v.AttributesWhy = "The cluster selects the pool; the client address is a key source."
	}
	for _, h := range []string{p.ReboundHeader, p.SuccessorHeader} {
		if h != "" {
			v.UpstreamHeaders = append(v.UpstreamHeaders, h)
		}
	}
	// What the pool keys by keeps a session on one host while the service
	// is away: our cookie, else the first source Envoy can hash.
	v.Hash = p.FallbackHash()
	switch h := v.Hash; {
	case h.Header != "":
		v.HashWhat = "header " + h.Header
	case h.Query != "":
		v.HashWhat = "query parameter " + oneLine(h.Query)
	case h.SourceIP:
		v.HashWhat = "client address"
	case h.Cookie != "" && h.Cookie != p.Cookie.Name:
		v.HashWhat = "cookie " + oneLine(h.Cookie)
	default:
		// Every kind of source can be hashed; our cookie names nothing
		// else.
		v.Hash, v.HashWhat = affinity.FallbackHash{Cookie: p.Cookie.Name}, "cookie"
	}
	if h := p.TokenHeader(); h != "" && v.Mode == affinity.ModeVerified {
		v.SessionHeader = h
		v.MaxLifetime = seconds(p.AbsoluteTimeout + tokenRounding)
		v.AbsoluteTimeout = p.AbsoluteTimeout
	}
	var err error
	if v.GRPC, err = parseEndpoint("-grpc-address", opts.GRPCAddress, DefaultGRPCAddress); err != nil {
		return nil, err
	}
	if v.Admin, err = parseEndpoint("-admin-address", opts.AdminAddress, DefaultAdminAddress); err != nil {
		return nil, err
	}
	if v.Mode == affinity.ModeVerified {
		ring := snap.Codec.Keys()
		for _, id := range ring.IDs() {
			if k, _ := ring.Lookup(id); k.Alg == affinity.AlgHS256 {
				// The JWKS serves Ed25519 keys only: with an HS256 key
				// Envoy reads a local file, and needs no admin cluster.
				v.LocalJWKS, v.AdminCluster = true, false
			}
		}
		v.JWKSURI = "http://" + net.JoinHostPort(v.Admin.Host, strconv.Itoa(v.Admin.Port)) + "/.well-known/jwks.json"
	}
	return v, nil
}

// parseEndpoint reads host:port, an address Envoy connects to.
func parseEndpoint(flag, addr, def string) (endpoint, error) {
	if addr == "" {
		addr = def
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return endpoint{}, fmt.Errorf("%s %q: %w", flag, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return endpoint{}, fmt.Errorf("%s %q: the port must be 1..65535", flag, addr)
	}
	e := endpoint{Host: host, Port: n, Type: "STRICT_DNS"}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() {
			return endpoint{}, fmt.Errorf("%s %q: give the address Envoy reaches the service at, not the one it listens on", flag, addr)
		}
		e.Type = "STATIC"
	} else if host == "" || strings.ContainsAny(host, " /\t\r\n") {
		return endpoint{}, errors.New(flag + ": give HOST:PORT, the host an IP address or a DNS name")
	}
	return e, nil
}

// seconds writes a duration as protobuf JSON does ("302s", "1.5s").
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// quote makes s a YAML scalar whatever it holds: a JSON string is a YAML
// double-quoted one.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// quoteList is the items of a flow sequence, each quoted.
func quoteList(items []string) string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = quote(s)
	}
	return strings.Join(out, ", ")
}

// oneLine keeps a name that goes into a comment on its line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
