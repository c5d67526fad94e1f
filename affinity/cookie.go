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

// CookieValue finds the named cookie in a Cookie request header value
// ("a=1; b=2"). Only the first occurrence counts; quotes around the value are
// removed as RFC 6265 allows. It never fails: anything malformed is skipped.
func CookieValue(header, name string) (string, bool) {
	for len(header) > 0 {
		var part string
		part, header, _ = strings.Cut(header, ";")
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(k) != name {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}
