package affinity

import "strings"

// KeySource is where a request's session key comes from: the type of a key
// source as the configuration names it.
type KeySource string

// Key sources. Each is one keyKind registered in keyKinds (sourcekinds.go).
const (
	// SourceCookie is our own signed session cookie.
	SourceCookie KeySource = "cookie"
	// SourceHeader is a request header whose value is the key (gRPC and
	// mobile clients). The key is placed by the hash and remembered.
	SourceHeader KeySource = "header"
	// SourceAppCookie is the application's own session cookie: the service
	// learns value → host from the responses that set it.
	SourceAppCookie KeySource = "app_cookie"
	// SourceQuery is a query parameter of the request's path.
	SourceQuery KeySource = "query"
	// SourceClientAddress is the client's IP address.
	SourceClientAddress KeySource = "client_address"
	// SourceUpstreamHeader is a session header the upstream starts: it
	// sets it in a response (MCP's Mcp-Session-Id) and the client sends it
	// back. The service learns value → host from the response, like an
	// application cookie, and forgets it when a DELETE carrying it ends the
	// session.
	SourceUpstreamHeader KeySource = "upstream_header"
)

// KeySourceSpec is one configured source.
type KeySourceSpec struct {
	Type KeySource
	// Name is the header, cookie or query parameter the source reads; for
	// our cookie, the pool's cookie name.
	Name        string
	TrustedHops int
	// Envelope (upstream_header): the value travels to the client inside a
	// signed token (Envelope) instead of being learned in the store.
	Envelope bool

	// kind is what the source's type does, and traits its properties,
	// resolved once when the pool is built: a decision reads them without
	// calling the kind.
	kind   keyKind
	traits keyTraits
}

// EnvelopeSigned is the envelope option of an upstream_header source.
const EnvelopeSigned = "signed"

// Headers gives a decision the request headers it asks for; names are lower
// case. Envoy's header list is read through it without copying.
type Headers interface {
	Get(name string) (string, bool)
}

// A keyKind is one type of key source: how a request carries its key, how
// the key is bound to a host, what its entry in the configuration takes,
// and what Envoy must know to keep its sessions. Adding a type of key
// source is one keyKind and one entry in keyKinds; the decision, the
// response phase, validation and Envoy's configuration read it from there.
type keyKind interface {
	// traits are the kind's fixed properties.
	traits() keyTraits
	// read returns the request's value of source ks (without the store
	// prefix), and whether the request carries one.
	read(ks *KeySourceSpec, req Request) (string, bool)
	// canonical is a value given in words (Engine.Explain) as read would
	// return it.
	canonical(value string) string
	// validate applies the kind's own rules to an entry of pool pc at
	// path at (its name); the options it does not take are checked for
	// every kind alike.
	validate(c *KeySourceConfig, pc *PoolConfig, v *validator, at string)
	// attach sets up source ks and what the decisions of pool p need of
	// it (what their response phase learns) when the pool is built.
	attach(p *Pool, ks *KeySourceSpec)
	// fallbackHash is what Envoy's fallback load balancer can hash to
	// keep the source's sessions on one host while the service is away
	// (zero: nothing).
	fallbackHash(ks *KeySourceSpec) FallbackHash
}

// keyTraits are a kind's fixed properties.
type keyTraits struct {
	// binding is how the kind's keys are bound to hosts.
	binding keyBinding
	// prefix keeps the kind's keys apart from other kinds' in the store
	// (empty for a kind whose keys are never stored). The prefixes are in
	// the shared store: a kind's never changes.
	prefix string
	// envelope and trustedHops say which options the entry takes.
	envelope, trustedHops bool
	// headerName: the entry's name is an HTTP header, case-insensitive
	// and kept in lower case as Envoy sends it.
	headerName bool
	// clientHeader: the entry's name is a request header the client names
	// its session with, which an output header may not reuse.
	clientHeader bool
	// clientAddress: the kind reads the client's address, which Envoy
	// sends only when asked (a request attribute).
	clientAddress bool
	// endsOnDelete: a DELETE carrying a key ends its session; the store
	// forgets the key once the request is decided.
	endsOnDelete bool
}

// keyBinding is how a kind's keys are bound to hosts.
type keyBinding uint8

const (
	// bindToken: the key is our signed session token, which names its
	// host; a request without one starts a session with a new token.
	bindToken keyBinding = iota
	// bindPlaced: a new key is placed by its hash and the store remembers
	// its host.
	bindPlaced
	// bindLearned: only the response that sets a key binds it; a key the
	// store does not know is no decision (the next source is tried).
	bindLearned
)

// Store prefixes of the kinds whose keys are stored.
const (
	prefixHeader    = "h:"
	prefixAppCookie = "c:"
	prefixQuery     = "q:"
	prefixAddress   = "a:"
	prefixUpstream  = "u:"
)

// registeredKind is one entry of keyKinds.
type registeredKind struct {
	typ  KeySource
	kind keyKind
}

// keyKinds are the types of key source, in the order the configuration
// reference and its errors list them.
var keyKinds = [...]registeredKind{
	{SourceCookie, sessionCookieKind{}},
	{SourceHeader, headerKind{}},
	{SourceAppCookie, appCookieKind{}},
	{SourceUpstreamHeader, upstreamHeaderKind{}},
	{SourceQuery, queryKind{}},
	{SourceClientAddress, clientAddressKind{}},
}

// kindOf is the registered kind of a type.
func kindOf(t KeySource) (keyKind, bool) {
	for _, r := range keyKinds {
		if r.typ == t {
			return r.kind, true
		}
	}
	return nil, false
}

// KeySourceTypes lists the types of key source the configuration takes.
func KeySourceTypes() []KeySource {
	out := make([]KeySource, len(keyKinds))
	for i, r := range keyKinds {
		out[i] = r.typ
	}
	return out
}

// typesWith lists, comma separated, the types whose traits satisfy f.
func typesWith(f func(keyTraits) bool) string {
	var names []string
	for _, r := range keyKinds {
		if f(r.kind.traits()) {
			names = append(names, string(r.typ))
		}
	}
	return strings.Join(names, ", ")
}

// FallbackHash is what Envoy's fallback load balancer hashes to keep a
// pool's sessions on one host while the service cannot be asked: a cookie,
// a request header, a query parameter or the client's address; zero when
// no key source can be hashed.
type FallbackHash struct {
	Cookie, Header, Query string
	SourceIP              bool
}

// FallbackHash is what Envoy should hash for the pool while the service is
// away: our session cookie when the pool has the cookie source (established
// sessions carry it), else the first key source Envoy can hash.
func (p *Pool) FallbackHash() FallbackHash {
	var first FallbackHash
	for i := range p.KeySources {
		ks := &p.KeySources[i]
		h := ks.kind.fallbackHash(ks)
		if ks.traits.binding == bindToken {
			return h
		}
		if first == (FallbackHash{}) {
			first = h
		}
	}
	return first
}

// NeedsClientAddress tells whether a key source of the pool reads the
// client's address, which Envoy sends the service only when asked.
func (p *Pool) NeedsClientAddress() bool {
	for i := range p.KeySources {
		if p.KeySources[i].traits.clientAddress {
			return true
		}
	}
	return false
}

// TokenHeader is the request header that carries the pool's signed session
// tokens when the pool has no cookie source: the upstream session header
// its decisions wrap in an envelope ("" when the cookie carries them, or
// nothing does).
func (p *Pool) TokenHeader() string {
	if p.keyedBy(bindToken) {
		return ""
	}
	return p.learning.envelope
}

// CookieSessions tells whether the pool has the cookie source: its
// sessions carry our signed session cookie.
func (p *Pool) CookieSessions() bool { return p.keyedBy(bindToken) }

// EnvoyVerifies tells whether Envoy itself verifies the pool's session
// tokens and routes established sessions without the service: verified
// mode with a source whose sessions carry a token (our cookie, or an
// upstream header in a signed envelope).
func (p *Pool) EnvoyVerifies() bool {
	return p.Mode == ModeVerified && (p.keyedBy(bindToken) || p.learning.envelope != "")
}

// EnvoyMode is the mode Envoy's configuration takes for the pool: its own,
// but opaque for a verified pool with no token for Envoy to verify. Such a
// pool's requests all go to the service, as in opaque mode, and the
// service decides them alike in both modes.
func (p *Pool) EnvoyMode() Mode {
	if p.Mode == ModeVerified && !p.EnvoyVerifies() {
		return ModeOpaque
	}
	return p.Mode
}

// keyedBy tells whether a key source of the pool binds its keys so.
func (p *Pool) keyedBy(b keyBinding) bool {
	for i := range p.KeySources {
		if p.KeySources[i].traits.binding == b {
			return true
		}
	}
	return false
}

// source returns the pool's first source of the given type.
func (p *Pool) source(t KeySource) (*KeySourceSpec, bool) {
	for i := range p.KeySources {
		if p.KeySources[i].Type == t {
			return &p.KeySources[i], true
		}
	}
	return nil, false
}

// learning names what the decisions of a pool ask the response phase to
// read, set up by the key sources' kinds (attach): the application cookie
// and the upstream session header whose values are learned, and the
// session header whose values are wrapped in an envelope ("" = none).
type learning struct {
	cookie, header, envelope string
}

func (r *Request) header(name string) (string, bool) {
	if r.Headers == nil {
		return "", false
	}
	return r.Headers.Get(name)
}
