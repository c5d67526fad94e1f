package affinity

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
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
	// HostID is the ID of the host the session is bound to.
	HostID string
	// IssuedAt is when the session started.
	IssuedAt time.Time
	// ExpiresAt is when the token stops being valid.
	ExpiresAt time.Time
}

// Token errors. Every one of them means "treat the request as a new session".
var (
	ErrTokenTooLong = errors.New("session token too long")
	ErrTokenInvalid = errors.New("session token invalid")
	ErrTokenExpired = errors.New("session token expired")
)

// claims is the token payload: sid and h plus the registered iat and exp.
type claims struct {
	SID string `json:"sid"`
	H   string `json:"h"`
	jwt.RegisteredClaims
}

// TokenCodec signs and verifies session tokens: compact JWS, HS256 only, with
// a kid header naming the key. It is safe for concurrent use.
type TokenCodec struct {
	keys   *Keyring
	parser *jwt.Parser
}

// NewTokenCodec returns a codec over the keyring.
func NewTokenCodec(keys *Keyring) *TokenCodec {
	return &TokenCodec{
		keys: keys,
		// The algorithm is pinned: "none", RS256 with an HMAC secret as public
		// key, and everything else is refused before any key is used. Claims
		// are checked by Verify against the caller's clock.
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithoutClaimsValidation(),
		),
	}
}

// Keys returns the keyring.
func (c *TokenCodec) Keys() *Keyring { return c.keys }

// Sign issues a token for the session, signed by the keyring's first key.
func (c *TokenCodec) Sign(s Session) (string, error) {
	key := c.keys.Signer()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{
		SID: s.ID,
		H:   s.HostID,
		RegisteredClaims: jwt.RegisteredClaims{
			IssuedAt:  jwt.NewNumericDate(s.IssuedAt),
			ExpiresAt: jwt.NewNumericDate(s.ExpiresAt),
		},
	})
	tok.Header["kid"] = key.ID
	return tok.SignedString(key.Secret)
}

// Verify checks the token's signature, algorithm and lifetime at now and
// returns the session it names. A token signed by any key of the ring
// verifies; the comparison of signatures is constant-time (hmac.Equal).
func (c *TokenCodec) Verify(token string, now time.Time) (Session, error) {
	if len(token) > MaxTokenBytes {
		return Session{}, ErrTokenTooLong
	}
	var cl claims
	_, err := c.parser.ParseWithClaims(token, &cl, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, ok := c.keys.Lookup(kid)
		if !ok {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		return key.Secret, nil
	})
	if err != nil {
		return Session{}, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	if cl.SID == "" || cl.H == "" || cl.ExpiresAt == nil || cl.IssuedAt == nil {
		return Session{}, fmt.Errorf("%w: missing claims", ErrTokenInvalid)
	}
	s := Session{ID: cl.SID, HostID: cl.H, IssuedAt: cl.IssuedAt.Time, ExpiresAt: cl.ExpiresAt.Time}
	if !now.Before(s.ExpiresAt) {
		return Session{}, ErrTokenExpired
	}
	return s, nil
}

// NewSessionID returns 128 random bits, base64url without padding.
func NewSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24).
	return base64.RawURLEncoding.EncodeToString(b[:])
}
