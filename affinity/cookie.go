package affinity

import (
	"strconv"
	"strings"
	"time"
)

// SameSite is the cookie's SameSite attribute.
type SameSite string

// SameSite values.
const (
	SameSiteLax    SameSite = "Lax"
	SameSiteStrict SameSite = "Strict"
	SameSiteNone   SameSite = "None"
)

// Lifetime says whether the cookie outlives the browser session (GEP-1619).
type Lifetime string

// Lifetime values.
const (
	// LifetimeSession writes no Max-Age: the browser drops the cookie when it closes.
	LifetimeSession Lifetime = "session"
	// LifetimePermanent writes Max-Age up to the token's expiry.
	LifetimePermanent Lifetime = "permanent"
)

// CookieSpec describes the session cookie.
type CookieSpec struct {
	Name     string
	Path     string
	Domain   string
	Secure   bool
	HTTPOnly bool
	SameSite SameSite
	Lifetime Lifetime
}

// SetCookie renders the Set-Cookie header value carrying token, which
// expires at expires.
func (c *CookieSpec) SetCookie(token string, now, expires time.Time) string {
	var b strings.Builder
	b.Grow(len(c.Name) + len(token) + 96)
	b.WriteString(c.Name)
	b.WriteByte('=')
	b.WriteString(token)
	if c.Path != "" {
		b.WriteString("; Path=")
		b.WriteString(c.Path)
	}
	if c.Domain != "" {
		b.WriteString("; Domain=")
		b.WriteString(c.Domain)
	}
	if c.Lifetime == LifetimePermanent {
		secs := int64(expires.Sub(now) / time.Second)
		if secs < 1 {
			secs = 1
		}
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(secs, 10))
	}
	if c.Secure {
		b.WriteString("; Secure")
	}
	if c.HTTPOnly {
		b.WriteString("; HttpOnly")
	}
	if c.SameSite != "" {
		b.WriteString("; SameSite=")
		b.WriteString(string(c.SameSite))
	}
	return b.String()
}

// Expire renders a Set-Cookie value that deletes the cookie.
func (c *CookieSpec) Expire() string {
	spec := *c
	spec.Lifetime = LifetimeSession
	return spec.SetCookie("", time.Time{}, time.Time{}) + "; Max-Age=0"
}

// CookieValue finds the named cookie in one Cookie request header value
// ("a=1; b=2") exactly as Envoy does (Http::Utility::parseCookieValue),
// which jwt_authn reads verified tokens with, so that the service and Envoy
// never judge different values: the parts between semicolons (empty ones
// skipped); a part's name runs from its first character other than a space
// (a tab is not skipped) to its first '=', with nothing trimmed after it;
// the value is the rest, untrimmed, less one pair of surrounding double
// quotes. The first part so named counts. It never fails.
func CookieValue(header, name string) (string, bool) {
	for len(header) > 0 {
		var part string
		part, header, _ = strings.Cut(header, ";")
		eq := strings.IndexByte(part, '=')
		if eq < 0 {
			continue
		}
		if strings.TrimLeft(part[:eq], " ") != name {
			continue
		}
		v := part[eq+1:]
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}

// RequestCookie finds the named cookie among a request's Cookie headers as
// Envoy 1.40 does: the first header that has it (TestCookieParsingMatchesEnvoy).
func RequestCookie(headers []string, name string) (string, bool) {
	for _, h := range headers {
		if v, ok := CookieValue(h, name); ok {
			return v, true
		}
	}
	return "", false
}
