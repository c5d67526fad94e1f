package affinity

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenBytes bounds the token a request may present. Ours are under 300
// bytes; anything longer is refused before it is decoded.
const MaxTokenBytes = 1024

// Session is what a verified session token says.
type Session struct {
	// ID is the random session id, the placement key of the session.
	ID string
	// Host is the h claim: the bound host's ID (opaque mode) or the override
	// list "primary,successor" as ip:port (verified mode).
	Host string
	// Primary is the p claim (verified mode only): standard base64 of the
	// primary's ip:port, as Envoy's header-based stateful_session reads it;
	// Envoy compares it with the host that served to mark a failover.
	Primary string
	// Start is when the session began (claim ss, kept across refreshes);
	// the absolute timeout counts from it.
	Start time.Time
	// IssuedAt is when this token was issued (iat): the last time the
	// service saw the session; the idle timeout counts from it.
	IssuedAt time.Time
	// ExpiresAt is when the token stops being valid and must be refreshed.
	ExpiresAt time.Time
	// Pool is the aud claim: the pool the token was issued for (empty in
	// tokens issued before tokens named it).
	Pool string
	// Envelope (claim e) marks a token that wraps an upstream session
	// header's value (ID); such a token is never a session cookie, nor a
	// cookie's token an envelope.
	Envelope bool
}

// MaxClockSkew is how far in the future a token's iat or nbf may be (the
// clocks of the replicas that issue and verify it differ).
const MaxClockSkew = time.Minute

// Token errors. Every one of them means "treat the request as a new session".
var (
	ErrTokenTooLong = errors.New("session token too long")
	ErrTokenInvalid = errors.New("session token invalid")
	ErrTokenExpired = errors.New("session token expired")
)

// Claims Envoy reads from jwt_authn's payload in verified mode: HostClaim
// names the bound hosts (override_host routes by it), PrimaryClaim the
// primary alone in base64 (stateful_session compares it with the host that
// served).
const (
	HostClaim    = "h"
	PrimaryClaim = "p"
)

// claims is the token payload: sid, h and ss plus the registered iat and exp.
type claims struct {
	SID string           `json:"sid"`
	H   string           `json:"h"`           // HostClaim
	P   string           `json:"p,omitempty"` // PrimaryClaim
	E   bool             `json:"e,omitempty"` // Session.Envelope
	SS  *jwt.NumericDate `json:"ss"`
	jwt.RegisteredClaims
}

// TokenCodec signs and verifies session tokens: compact JWS, EdDSA (Ed25519)
// or HS256, with a kid header naming the key. It is safe for concurrent use.
type TokenCodec struct {
	keys   *Keyring
	parser *jwt.Parser
}

// NewTokenCodec returns a codec over the keyring.
func NewTokenCodec(keys *Keyring) *TokenCodec {
	return &TokenCodec{
		keys: keys,
		// Only our two algorithms pass the parser ("none", RS256 and the rest
		// are refused before any key is used), and the key function pins each
		// kid to its own algorithm, so an HMAC token can never be checked
		// against an Ed25519 public key. Claims are checked by Verify
		// against the caller's clock.
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{AlgHS256, AlgEdDSA}),
			jwt.WithoutClaimsValidation(),
		),
	}
}

// Keys returns the keyring.
func (c *TokenCodec) Keys() *Keyring { return c.keys }

// Sign issues a token for the session, signed by the keyring's signer at now.
func (c *TokenCodec) Sign(s Session, now time.Time) (string, error) {
	key := c.keys.Signer(now)
	var method jwt.SigningMethod = jwt.SigningMethodHS256
	if key.Alg == AlgEdDSA {
		method = jwt.SigningMethodEdDSA
	}
	cl := claims{
		SID: s.ID,
		H:   s.Host,
		P:   s.Primary,
		E:   s.Envelope,
		SS:  jwt.NewNumericDate(s.Start),
		RegisteredClaims: jwt.RegisteredClaims{
			IssuedAt:  jwt.NewNumericDate(s.IssuedAt),
			ExpiresAt: jwt.NewNumericDate(s.ExpiresAt),
		},
	}
	if s.Pool != "" {
		cl.Audience = jwt.ClaimStrings{s.Pool}
	}
	tok := jwt.NewWithClaims(method, cl)
	tok.Header["kid"] = key.ID
	delete(tok.Header, "typ") // a few bytes less in every cookie
	return tok.SignedString(key.signingKey())
}

// Verify checks the token's signature, algorithm and lifetime at now and
// returns the session it names. A token signed by any key of the ring
// verifies; HMAC signatures are compared in constant time (hmac.Equal). A
// token whose signature is good but whose exp has passed returns its session
// with ErrTokenExpired, so that it can be refreshed.
func (c *TokenCodec) Verify(token string, now time.Time) (Session, error) {
	if len(token) > MaxTokenBytes {
		return Session{}, ErrTokenTooLong
	}
	// Envoy's base64 decoding ignores white space after the signature (a
	// cookie written "affinity=TOKEN ; x=1" verifies there): so here.
	token = strings.TrimRight(token, " \t")
	var cl claims
	_, err := c.parser.ParseWithClaims(token, &cl, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, ok := c.keys.Lookup(kid)
		if !ok {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		if t.Method.Alg() != key.Alg {
			return nil, fmt.Errorf("key %q is %s, the token says %s", kid, key.Alg, t.Method.Alg())
		}
		return key.verifyingKey(), nil
	})
	if err != nil {
		return Session{}, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	if cl.SID == "" || cl.H == "" || cl.SS == nil || cl.ExpiresAt == nil || cl.IssuedAt == nil || len(cl.Audience) > 1 {
		return Session{}, fmt.Errorf("%w: missing claims", ErrTokenInvalid)
	}
	// Issued, or valid from, in the future (beyond the replicas' clock
	// skew): not a token this service issued as it is.
	if late := now.Add(MaxClockSkew); cl.IssuedAt.After(late) || cl.NotBefore != nil && cl.NotBefore.After(late) || cl.SS.After(late) {
		return Session{}, fmt.Errorf("%w: issued in the future", ErrTokenInvalid)
	}
	s := Session{ID: cl.SID, Host: cl.H, Primary: cl.P, Start: cl.SS.Time, IssuedAt: cl.IssuedAt.Time, ExpiresAt: cl.ExpiresAt.Time, Envelope: cl.E}
	if len(cl.Audience) == 1 {
		s.Pool = cl.Audience[0]
	}
	if !now.Before(s.ExpiresAt) {
		return s, ErrTokenExpired
	}
	return s, nil
}

// NewSessionID returns 128 random bits, base64url without padding.
func NewSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24).
	return base64.RawURLEncoding.EncodeToString(b[:])
}
