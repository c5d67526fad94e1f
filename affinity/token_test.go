package affinity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Unix(1_800_000_000, 0)

func testSession() Session {
	return Session{ID: "sid-1", Host: "web-1", Start: t0.Add(-time.Minute), IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
}

// handToken builds a compact JWS by hand, to present what a forger would.
func handToken(header, payload string, key []byte) string {
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	if key == nil {
		return signing + "."
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func TestTokenRoundTrip(t *testing.T) {
	codec := NewTokenCodec(testKeyring(t))
	tok, err := codec.Sign(testSession(), t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) > 200 {
		t.Errorf("token is %d bytes, want a compact one", len(tok))
	}
	got, err := codec.Verify(tok, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := testSession()
	if got.ID != want.ID || got.Host != want.Host || !got.Start.Equal(want.Start) || !got.IssuedAt.Equal(want.IssuedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestTokenRefused(t *testing.T) {
	ring := testKeyring(t)
	codec := NewTokenCodec(ring)
	good, err := codec.Sign(testSession(), t0)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := []byte("ffffffffffffffffffffffffffffffff")
	other := NewTokenCodec(ringOf(Key{ID: "k1", Alg: AlgHS256, Secret: otherKey}))
	resigned, _ := other.Sign(testSession(), t0)
	unknownKid := NewTokenCodec(ringOf(Key{ID: "k9", Alg: AlgHS256, Secret: ring.Signer(t0).Secret}))
	unknown, _ := unknownKid.Sign(testSession(), t0)
	payload := `{"sid":"s","h":"web-1","ss":1800000000,"iat":1800000000,"exp":1800003600}`
	secret := ring.Signer(t0).Secret
	parts := strings.Split(good, ".")

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"empty", "", ErrTokenInvalid},
		{"garbage", "not-a-token", ErrTokenInvalid},
		{"truncated", good[:len(good)-5], ErrTokenInvalid},
		{"payload swapped", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + parts[2], ErrTokenInvalid},
		{"signed with another key under the same kid", resigned, ErrTokenInvalid},
		{"unknown kid", unknown, ErrTokenInvalid},
		{"alg none", handToken(`{"alg":"none","kid":"k1"}`, payload, nil), ErrTokenInvalid},
		{"alg HS512", handToken(`{"alg":"HS512","kid":"k1"}`, payload, secret), ErrTokenInvalid},
		{"no kid", handToken(`{"alg":"HS256"}`, payload, secret), ErrTokenInvalid},
		{"missing sid", handToken(`{"alg":"HS256","kid":"k1"}`, `{"h":"web-1","iat":1800000000,"exp":1800003600}`, secret), ErrTokenInvalid},
		{"missing exp", handToken(`{"alg":"HS256","kid":"k1"}`, `{"sid":"s","h":"web-1","ss":1800000000,"iat":1800000000}`, secret), ErrTokenInvalid},
		{"missing ss", handToken(`{"alg":"HS256","kid":"k1"}`, `{"sid":"s","h":"web-1","iat":1800000000,"exp":1800003600}`, secret), ErrTokenInvalid},
		{"exp not a number", handToken(`{"alg":"HS256","kid":"k1"}`, `{"sid":"s","h":"web-1","iat":1800000000,"exp":"soon"}`, secret), ErrTokenInvalid},
		{"too long", good + strings.Repeat("A", MaxTokenBytes), ErrTokenTooLong},
		{"expired", handToken(`{"alg":"HS256","kid":"k1"}`, `{"sid":"s","h":"web-1","ss":1700000000,"iat":1700000000,"exp":1700003600}`, secret), ErrTokenExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := codec.Verify(tt.token, t0.Add(time.Minute))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	// The hand-built token is accepted when nothing is wrong with it, so the
	// rows above fail for the reason they name.
	if _, err := codec.Verify(handToken(`{"alg":"HS256","kid":"k1"}`, payload, secret), t0.Add(time.Minute)); err != nil {
		t.Fatalf("well-formed hand token refused: %v", err)
	}
}

func TestTokenKeyRotation(t *testing.T) {
	const newSecret = "YWJjZGVmYWJjZGVmYWJjZGVmYWJjZGVmYWJjZGVmYWI"
	oldRing := testKeyring(t, "k1:"+testSecret)
	rotated := testKeyring(t, "k2:"+newSecret, "k1:"+testSecret)
	oldTok, _ := NewTokenCodec(oldRing).Sign(testSession(), t0)
	codec := NewTokenCodec(rotated)
	if _, err := codec.Verify(oldTok, t0); err != nil {
		t.Fatalf("token of the old key refused after rotation: %v", err)
	}
	newTok, _ := codec.Sign(testSession(), t0)
	if !strings.HasPrefix(newTok, "eyJ") {
		t.Fatal("not a JWS")
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(newTok, ".")[0])
	if !strings.Contains(string(hdr), `"kid":"k2"`) {
		t.Fatalf("new token header %s does not name the new key", hdr)
	}
	if _, err := NewTokenCodec(oldRing).Verify(newTok, t0); err == nil {
		t.Fatal("the old ring verified a token of a key it does not have")
	}
}

// FuzzVerify feeds the cookie decoder arbitrary input: it must never panic and
// never accept a token without a session id and host.
func FuzzVerify(f *testing.F) {
	ring := testKeyring(f)
	codec := NewTokenCodec(ring)
	good, _ := codec.Sign(testSession(), t0)
	f.Add(good)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add(handToken(`{"alg":"HS256","kid":"k1"}`, `{"sid":"","h":"x","iat":1,"exp":99999999999}`, ring.Signer(t0).Secret))
	f.Add(good[:40])
	f.Add(strings.Repeat(".", 100))
	f.Fuzz(func(t *testing.T, token string) {
		s, err := codec.Verify(token, t0)
		if err == nil && (s.ID == "" || s.Host == "") {
			t.Fatalf("accepted %q without sid or host", token)
		}
	})
}

func ringOf(keys ...Key) *Keyring {
	return &Keyring{keys: keys, signFrom: make([]time.Time, len(keys))}
}

const edSeed = "ZWQyNTUxOS1zZWVkLWZvci10ZXN0cy0wMTIzNDU2Nzg"

func TestEdDSATokens(t *testing.T) {
	ring := testKeyring(t, "e1:ed25519:"+edSeed, "h1:hs256:"+testSecret)
	codec := NewTokenCodec(ring)
	tok, err := codec.Sign(testSession(), t0)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if string(hdr) != `{"alg":"EdDSA","kid":"e1"}` {
		t.Fatalf("header %s", hdr)
	}
	if s, err := codec.Verify(tok, t0); err != nil || s.Host != "web-1" {
		t.Fatalf("EdDSA round trip: %+v %v", s, err)
	}
	e1, _ := ring.Lookup("e1")
	payload := `{"sid":"s","h":"web-1","ss":1800000000,"iat":1800000000,"exp":1800003600}`
	tests := []struct{ name, token string }{
		// The classic confusion: an HMAC token keyed with the public key.
		{"HS256 under an Ed25519 kid", handToken(`{"alg":"HS256","kid":"e1"}`, payload, e1.Public)},
		{"EdDSA header under an HS256 kid", handToken(`{"alg":"EdDSA","kid":"h1"}`, payload, ring.keys[1].Secret)},
		{"signature of another Ed25519 key", swapSignature(tok, testKeyring(t, "e1:ed25519:"+testSecret))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := codec.Verify(tt.token, t0); !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("err = %v, want invalid", err)
			}
		})
	}
}

// swapSignature re-signs the token's content with ring's key.
func swapSignature(tok string, ring *Keyring) string {
	other, _ := NewTokenCodec(ring).Sign(testSession(), t0)
	p := strings.Split(tok, ".")
	return p[0] + "." + p[1] + "." + strings.Split(other, ".")[2]
}

func TestExpiredTokenKeepsItsSession(t *testing.T) {
	codec := NewTokenCodec(testKeyring(t))
	tok, _ := codec.Sign(testSession(), t0)
	s, err := codec.Verify(tok, t0.Add(2*time.Hour))
	if !errors.Is(err, ErrTokenExpired) || s.ID != "sid-1" || !s.IssuedAt.Equal(t0) {
		t.Fatalf("expired: %+v %v", s, err)
	}
}

func BenchmarkTokenVerify(b *testing.B) {
	for _, line := range []string{"k1:hs256:" + testSecret, "e1:ed25519:" + edSeed} {
		codec := NewTokenCodec(testKeyring(b, line))
		tok, _ := codec.Sign(testSession(), t0)
		b.Run(codec.Keys().Signer(t0).Alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := codec.Verify(tok, t0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkTokenSign(b *testing.B) {
	for _, line := range []string{"k1:hs256:" + testSecret, "e1:ed25519:" + edSeed} {
		codec := NewTokenCodec(testKeyring(b, line))
		b.Run(codec.Keys().Signer(t0).Alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := codec.Sign(testSession(), t0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestTokenBinding: a token is honoured only by the pool it was issued
// for, only for as long as the pool issues tokens, and not before it was
// issued; the absolute timeout holds at every verification.
func TestTokenBinding(t *testing.T) {
	clock := &fixedClock{t: t0}
	snap := modeSnapshot(t, ModeOpaque, "web-1", "web-2", "web-3") // refresh 5m, absolute 1h
	e := NewEngine(snap, clock.now)
	sign := func(s Session) string {
		t.Helper()
		tok, err := snap.Codec.Sign(s, t0)
		if err != nil {
			t.Fatal(err)
		}
		return "affinity=" + tok
	}
	base := Session{ID: "s1", Host: "web-2", Start: t0.Add(-time.Minute), IssuedAt: t0, ExpiresAt: t0.Add(5 * time.Minute), Pool: DefaultPoolName}
	with := func(f func(*Session)) Session { s := base; f(&s); return s }
	tests := []struct {
		name    string
		sess    Session
		outcome Outcome
		reason  Reason
		sameSID bool
	}{
		{"its own pool", base, OutcomePinned, ReasonNone, true},
		{"issued before tokens named their pool", with(func(s *Session) { s.Pool = "" }), OutcomePinned, ReasonNone, true},
		{"another pool's token", with(func(s *Session) { s.Pool = "shop" }), OutcomeNew, ReasonInvalidCookie, false},
		{"issued in the future", with(func(s *Session) { s.IssuedAt = t0.Add(2 * time.Minute) }), OutcomeNew, ReasonInvalidCookie, false},
		{"valid for a hundred years: refreshed", with(func(s *Session) { s.ExpiresAt = t0.AddDate(100, 0, 0) }), OutcomePinned, ReasonExpired, true},
		{"past the absolute timeout while valid", with(func(s *Session) { s.Start = t0.Add(-2 * time.Hour) }), OutcomeNew, ReasonExpired, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Decide(Request{CookieHeaders: []string{sign(tt.sess)}})
			if d.Outcome != tt.outcome || d.Reason != tt.reason {
				t.Fatalf("outcome %v reason %v, want %v %v", d.Outcome, d.Reason, tt.outcome, tt.reason)
			}
			if tt.sameSID && d.Outcome == OutcomePinned && d.HostID != "web-2" {
				t.Fatalf("pinned to %s, want web-2", d.HostID)
			}
			if d.SetCookie != "" {
				s, err := snap.Codec.Verify(strings.TrimPrefix(strings.SplitN(d.SetCookie, ";", 2)[0], "affinity="), t0)
				if err != nil || (s.ID == "s1") != tt.sameSID || s.Pool != DefaultPoolName || s.ExpiresAt.After(t0.Add(5*time.Minute)) {
					t.Fatalf("issued %+v, %v", s, err)
				}
			}
		})
	}
}

// TestVerifyIgnoresTrailingWhiteSpace: Envoy verifies "TOKEN " (its base64
// decoding ignores the space), so the service does too; a leading space is
// refused by both.
func TestVerifyIgnoresTrailingWhiteSpace(t *testing.T) {
	codec := NewTokenCodec(testKeyring(t, "k1:"+testSecret))
	tok, err := codec.Sign(Session{ID: "s", Host: "h", Start: t0, IssuedAt: t0, ExpiresAt: t0.Add(time.Minute)}, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		token string
		ok    bool
	}{{tok + " ", true}, {tok + " \t ", true}, {" " + tok, false}} {
		if _, err := codec.Verify(tt.token, t0); (err == nil) != tt.ok {
			t.Errorf("Verify(%q): %v, want ok %v", tt.token, err, tt.ok)
		}
	}
}
