package affinity

import (
	"net/netip"
	"net/url"
	"strings"
)

// The kinds of key source, one type each, registered in keyKinds.

// kindDefaults is what a kind does unless it says otherwise: its value is
// taken as given, its entry has no rules of its own, it sets nothing up and
// Envoy cannot hash it (every kind so far says otherwise).
type kindDefaults struct{}

func (kindDefaults) canonical(value string) string                              { return value }
func (kindDefaults) validate(*KeySourceConfig, *PoolConfig, *validator, string) {}
func (kindDefaults) attach(*Pool, *KeySourceSpec)                               {}
func (kindDefaults) fallbackHash(*KeySourceSpec) FallbackHash                   { return FallbackHash{} }

// needName checks that an entry names what its kind reads.
func needName(c *KeySourceConfig, v *validator, at string) {
	if c.Name == "" || !cookieNameRE.MatchString(c.Name) {
		v.errorf(at+".name", "%s needs a valid name, got %q", c.Type, c.Name)
	}
}

// sessionCookieKind is our own signed session cookie (SourceCookie): its
// token names the host.
type sessionCookieKind struct{ kindDefaults }

func (sessionCookieKind) traits() keyTraits { return keyTraits{binding: bindToken} }

// read returns the token; a cookie that is present counts even when empty
// or invalid (it becomes a new session).
func (sessionCookieKind) read(ks *KeySourceSpec, req Request) (string, bool) {
	return requestToken(ks, &req)
}

// requestToken is the request's session token (the decision reads it
// directly, sessionCookieKind.read through the kind).
func requestToken(ks *KeySourceSpec, req *Request) (string, bool) {
	return RequestCookie(req.CookieHeaders, ks.Name)
}

func (sessionCookieKind) validate(c *KeySourceConfig, _ *PoolConfig, v *validator, at string) {
	if c.Name != "" {
		v.errorf(at+".name", "the cookie source is named by pools[].cookie.name")
	}
}

func (sessionCookieKind) attach(p *Pool, ks *KeySourceSpec) { ks.Name = p.Cookie.Name }

func (sessionCookieKind) fallbackHash(ks *KeySourceSpec) FallbackHash {
	return FallbackHash{Cookie: ks.Name}
}

// headerKind is a request header the client names its session with
// (SourceHeader).
type headerKind struct{ kindDefaults }

func (headerKind) traits() keyTraits {
	return keyTraits{binding: bindPlaced, prefix: prefixHeader, headerName: true, clientHeader: true}
}

func (headerKind) read(ks *KeySourceSpec, req Request) (string, bool) {
	v, ok := req.header(ks.Name)
	return v, ok && v != ""
}

func (headerKind) validate(c *KeySourceConfig, _ *PoolConfig, v *validator, at string) {
	needName(c, v, at)
}

func (headerKind) fallbackHash(ks *KeySourceSpec) FallbackHash { return FallbackHash{Header: ks.Name} }

// appCookieKind is the application's own session cookie (SourceAppCookie),
// learned from the responses that set it.
type appCookieKind struct{ kindDefaults }

func (appCookieKind) traits() keyTraits {
	return keyTraits{binding: bindLearned, prefix: prefixAppCookie}
}

func (appCookieKind) read(ks *KeySourceSpec, req Request) (string, bool) {
	v, ok := RequestCookie(req.CookieHeaders, ks.Name)
	return v, ok && v != ""
}

func (appCookieKind) validate(c *KeySourceConfig, pc *PoolConfig, v *validator, at string) {
	needName(c, v, at)
	if c.Name == strings.ToLower(pc.Cookie.Name) {
		v.errorf(at+".name", "%q is the session cookie itself", c.Name)
	}
}

// attach: the pool's first application cookie is the one its responses
// teach.
func (appCookieKind) attach(p *Pool, ks *KeySourceSpec) {
	if p.learning.cookie == "" {
		p.learning.cookie = ks.Name
	}
}

// fallbackHash: the host that set the value is not the one its hash names,
// but the session then stays on one host, where the application can start
// it again, instead of a new host on every request.
func (appCookieKind) fallbackHash(ks *KeySourceSpec) FallbackHash {
	return FallbackHash{Cookie: ks.Name}
}

// upstreamHeaderKind is a session header the upstream starts
// (SourceUpstreamHeader), learned from the response that sets it or
// carried in a signed envelope.
type upstreamHeaderKind struct{ kindDefaults }

func (upstreamHeaderKind) traits() keyTraits {
	return keyTraits{binding: bindLearned, prefix: prefixUpstream, envelope: true, headerName: true, endsOnDelete: true}
}

func (upstreamHeaderKind) read(ks *KeySourceSpec, req Request) (string, bool) {
	v, ok := req.header(ks.Name)
	return v, ok && v != ""
}

func (upstreamHeaderKind) validate(c *KeySourceConfig, _ *PoolConfig, v *validator, at string) {
	needName(c, v, at)
}

// attach: the pool's first upstream session header is the one its
// responses teach, or wrap when it takes an envelope.
func (upstreamHeaderKind) attach(p *Pool, ks *KeySourceSpec) {
	switch {
	case p.learning.header != "" || p.learning.envelope != "":
	case ks.Envelope:
		p.learning.envelope = ks.Name
	default:
		p.learning.header = ks.Name
	}
}

func (upstreamHeaderKind) fallbackHash(ks *KeySourceSpec) FallbackHash {
	return FallbackHash{Header: ks.Name}
}

// queryKind is a query parameter of the request's path (SourceQuery).
type queryKind struct{ kindDefaults }

func (queryKind) traits() keyTraits { return keyTraits{binding: bindPlaced, prefix: prefixQuery} }

func (queryKind) read(ks *KeySourceSpec, req Request) (string, bool) {
	path, _ := req.header(":path")
	if _, q, ok := strings.Cut(path, "?"); ok {
		if vals, err := url.ParseQuery(q); err == nil && vals.Get(ks.Name) != "" {
			return vals.Get(ks.Name), true
		}
	}
	return "", false
}

func (queryKind) validate(c *KeySourceConfig, _ *PoolConfig, v *validator, at string) {
	needName(c, v, at)
}

func (queryKind) fallbackHash(ks *KeySourceSpec) FallbackHash { return FallbackHash{Query: ks.Name} }

// clientAddressKind is the client's IP address (SourceClientAddress).
type clientAddressKind struct{ kindDefaults }

func (clientAddressKind) traits() keyTraits {
	return keyTraits{binding: bindPlaced, prefix: prefixAddress, trustedHops: true, clientAddress: true}
}

func (clientAddressKind) read(ks *KeySourceSpec, req Request) (string, bool) {
	if ip := clientAddress(&req, ks.TrustedHops); ip.IsValid() {
		return ip.String(), true
	}
	return "", false
}

// canonical writes an IPv4-mapped address as the IPv4 address it is.
func (clientAddressKind) canonical(value string) string {
	if ip, err := netip.ParseAddr(value); err == nil {
		return ip.Unmap().String()
	}
	return value
}

// fallbackHash: Envoy's source address is the client Envoy's own
// xff_num_trusted_hops picks, which trusted_hops is told to match.
func (clientAddressKind) fallbackHash(*KeySourceSpec) FallbackHash {
	return FallbackHash{SourceIP: true}
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

// Every kind is a keyKind.
var (
	_ keyKind = sessionCookieKind{}
	_ keyKind = headerKind{}
	_ keyKind = appCookieKind{}
	_ keyKind = upstreamHeaderKind{}
	_ keyKind = queryKind{}
	_ keyKind = clientAddressKind{}
)
