package affinity

import (
	"net/netip"
	"net/url"
	"strings"
)

// KeySource is where a request's session key comes from.
type KeySource string

// Key sources.
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
	Type        KeySource
	Name        string
	TrustedHops int
	// Envelope (upstream_header): the value travels to the client inside a
	// signed token (Envelope) instead of being learned in the store.
	Envelope bool
}

// EnvelopeSigned is the envelope option of an upstream_header source.
const EnvelopeSigned = "signed"

// Headers gives a decision the request headers it asks for; names are lower
// case. Envoy's header list is read through it without copying.
type Headers interface {
	Get(name string) (string, bool)
}

// Prefixes keep the keys of different sources apart in the store.
const (
	prefixHeader    = "h:"
	prefixAppCookie = "c:"
	prefixQuery     = "q:"
	prefixAddress   = "a:"
	prefixUpstream  = "u:"
)

// learned tells whether a source's keys are bound only by the responses
// that set them (never placed by their hash).
func (t KeySource) learned() bool { return t == SourceAppCookie || t == SourceUpstreamHeader }

// key returns the request's key from the source, with the source's prefix,
// or "" when the request has none.
func (ks *KeySourceSpec) key(req *Request) string {
	switch ks.Type {
	case SourceHeader:
		if v, ok := req.header(ks.Name); ok && v != "" {
			return prefixHeader + v
		}
	case SourceAppCookie:
		if v, ok := RequestCookie(req.CookieHeaders, ks.Name); ok && v != "" {
			return prefixAppCookie + v
		}
	case SourceQuery:
		path, _ := req.header(":path")
		if _, q, ok := strings.Cut(path, "?"); ok {
			if vals, err := url.ParseQuery(q); err == nil && vals.Get(ks.Name) != "" {
				return prefixQuery + vals.Get(ks.Name)
			}
		}
	case SourceClientAddress:
		if ip := clientAddress(req, ks.TrustedHops); ip.IsValid() {
			return prefixAddress + ip.String()
		}
	case SourceUpstreamHeader:
		if v, ok := req.header(ks.Name); ok && v != "" {
			return prefixUpstream + v
		}
	}
	return ""
}

// clientAddress is the request's source address as Envoy reports it, or
// with n trusted hops the address n entries left of the last one of
// x-forwarded-for, which Envoy (use_remote_address) appended: the client
// as Envoy's xff_num_trusted_hops: n picks it
// (TestClientAddressBehindATrustedProxy).
func clientAddress(req *Request, hops int) netip.Addr {
	if hops > 0 {
		// Envoy (use_remote_address) has appended the connection's
		// address: the client is hops entries left of it.
		xff, _ := req.header("x-forwarded-for")
		parts := strings.Split(xff, ",")
		if i := len(parts) - 1 - hops; i >= 0 {
			if ip, err := netip.ParseAddr(strings.TrimSpace(parts[i])); err == nil {
				return ip.Unmap()
			}
		}
	}
	if ap, err := netip.ParseAddrPort(req.SourceAddress); err == nil {
		return ap.Addr().Unmap()
	}
	ip, _ := netip.ParseAddr(req.SourceAddress)
	return ip.Unmap()
}

func (r *Request) header(name string) (string, bool) {
	if r.Headers == nil {
		return "", false
	}
	return r.Headers.Get(name)
}
