package affinity

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MinKeyBytes is the shortest HS256 secret accepted: HS256 is only as strong
// as its key, and RFC 7518 asks for at least the hash size.
const MinKeyBytes = 32

// Signing algorithms, as JWS names them.
const (
	AlgHS256 = "HS256"
	AlgEdDSA = "EdDSA"
)

// Key is one signing key with the id that tokens name in their kid header.
type Key struct {
	ID  string
	Alg string // AlgHS256 or AlgEdDSA
	// Secret is the HMAC key (HS256).
	Secret []byte
	// Private and Public are the Ed25519 pair (EdDSA).
	Private ed25519.PrivateKey
	Public  ed25519.PublicKey
}

// signingKey and verifyingKey are what golang-jwt takes for the key's algorithm.
func (k Key) signingKey() any {
	if k.Alg == AlgEdDSA {
		return k.Private
	}
	return k.Secret
}

func (k Key) verifyingKey() any {
	if k.Alg == AlgEdDSA {
		return k.Public
	}
	return k.Secret
}

// sameMaterial reports whether two keys are the same key.
func (k Key) sameMaterial(o Key) bool {
	return k.ID == o.ID && k.Alg == o.Alg && string(k.Secret) == string(o.Secret) && string(k.Public) == string(o.Public)
}

// Keyring holds the keys in order: the first key signs new tokens once it
// may (see SignFrom), all of them verify. Rotation: put a new key first and
// keep the old one until the tokens it signed have expired.
type Keyring struct {
	keys []Key
	// signFrom[i] is when keys[i] may start signing: zero for keys present
	// when the service started, later for keys that arrived in a reload, so
	// that every verifier (Envoy's JWKS cache) has them before tokens do.
	signFrom []time.Time
}

// Signer returns the key that signs at now: the first key whose signing
// time has come, or the first key if none has.
func (k *Keyring) Signer(now time.Time) Key {
	for i, key := range k.keys {
		if !now.Before(k.signFrom[i]) {
			return key
		}
	}
	return k.keys[0]
}

// Lookup returns the key with the given id.
func (k *Keyring) Lookup(id string) (Key, bool) {
	for _, key := range k.keys {
		if key.ID == id {
			return key, true
		}
	}
	return Key{}, false
}

// IDs lists the key ids in file order.
func (k *Keyring) IDs() []string {
	ids := make([]string, len(k.keys))
	for i, key := range k.keys {
		ids[i] = key.ID
	}
	return ids
}

// SignFrom returns when the key with the given id may start signing.
func (k *Keyring) SignFrom(id string) time.Time {
	for i, key := range k.keys {
		if key.ID == id {
			return k.signFrom[i]
		}
	}
	return time.Time{}
}

// Carry keeps the signing times of keys that prev already had and gives
// each new key now+delay. With no prev (the first load) every key may sign
// at once. When no key of the new ring may sign yet (the signing key was
// replaced), prev's signer stays in the ring, last, and signs until the new
// key's delay has passed, so that Envoy never meets a token signed with a
// key it has not fetched; the next reload drops it.
func (k *Keyring) Carry(prev *Keyring, now time.Time, delay time.Duration) {
	for i, key := range k.keys {
		switch {
		case prev == nil:
			k.signFrom[i] = time.Time{}
		default:
			k.signFrom[i] = now.Add(delay)
			for j, old := range prev.keys {
				if old.sameMaterial(key) {
					k.signFrom[i] = prev.signFrom[j]
				}
			}
		}
	}
	if prev == nil || k.canSign(now) {
		return
	}
	old := prev.Signer(now)
	for _, key := range k.keys {
		if key.ID == old.ID {
			return // another key under its id: it cannot stay beside it
		}
	}
	k.keys = append(k.keys, old)
	k.signFrom = append(k.signFrom, time.Time{})
}

// canSign reports whether some key may sign at now.
func (k *Keyring) canSign(now time.Time) bool {
	for _, from := range k.signFrom {
		if !now.Before(from) {
			return true
		}
	}
	return false
}

// jwk is one JSON Web Key (RFC 7517) as Envoy's jwt_authn reads it.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	X   string `json:"x,omitempty"`
	K   string `json:"k,omitempty"`
}

// JWKS renders the keys as a JSON Web Key Set. Ed25519 keys are published
// by their public half. HS256 keys are secrets: they are written only when
// withSecrets is true (a JWKS file for Envoy's local_jwks), and left out
// otherwise.
func (k *Keyring) JWKS(withSecrets bool) []byte {
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	enc := base64.RawURLEncoding
	for _, key := range k.keys {
		switch {
		case key.Alg == AlgEdDSA:
			set.Keys = append(set.Keys, jwk{Kty: "OKP", Crv: "Ed25519", Alg: AlgEdDSA, Kid: key.ID, Use: "sig", X: enc.EncodeToString(key.Public)})
		case withSecrets:
			set.Keys = append(set.Keys, jwk{Kty: "oct", Alg: AlgHS256, Kid: key.ID, Use: "sig", K: enc.EncodeToString(key.Secret)})
		}
	}
	out, _ := json.Marshal(set) // plain strings: cannot fail
	return out
}

// ParseKeyring reads keys written one per line (or separated by commas, as an
// environment variable allows): "id:ed25519:base64-seed" (32 bytes),
// "id:hs256:base64-secret" (at least 32 bytes), or "id:base64-secret" for
// HS256. Blank lines and lines starting with # are ignored. Every problem is
// reported, each with its line number.
func ParseKeyring(text string) (*Keyring, error) {
	var (
		ring Keyring
		errs []error
		seen = map[string]bool{}
	)
	for lineNo, line := range strings.Split(text, "\n") {
		for _, entry := range strings.Split(line, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" || strings.HasPrefix(entry, "#") {
				continue
			}
			key, err := parseKey(entry)
			if err == nil && seen[key.ID] {
				err = fmt.Errorf("key id %q appears twice", key.ID)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("line %d: %w", lineNo+1, err))
				continue
			}
			seen[key.ID] = true
			ring.keys = append(ring.keys, key)
		}
	}
	if len(errs) == 0 && len(ring.keys) == 0 {
		errs = append(errs, errors.New("no keys: write one key per line as id:ed25519:base64-seed or id:hs256:base64-secret (see the keygen command)"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	ring.signFrom = make([]time.Time, len(ring.keys))
	return &ring, nil
}

func parseKey(entry string) (Key, error) {
	parts := strings.Split(entry, ":")
	var id, alg, secret string
	switch len(parts) {
	case 2:
		id, alg, secret = parts[0], "hs256", parts[1]
	case 3:
		id, alg, secret = parts[0], strings.ToLower(parts[1]), parts[2]
	default:
		return Key{}, errors.New(`a key is written "id:ed25519:base64-seed" or "id:hs256:base64-secret"`)
	}
	id = strings.TrimSpace(id)
	if id == "" {
		return Key{}, errors.New("a key needs an id before the first ':'")
	}
	for _, r := range id {
		if !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return Key{}, fmt.Errorf("key id %q: only letters, digits, '-', '_' and '.' are allowed", id)
		}
	}
	raw, err := decodeBase64(strings.TrimSpace(secret))
	if err != nil {
		return Key{}, fmt.Errorf("key %q: secret is not base64: %v", id, err)
	}
	switch alg {
	case "hs256":
		if len(raw) < MinKeyBytes {
			return Key{}, fmt.Errorf("key %q: secret has %d bytes, at least %d are needed", id, len(raw), MinKeyBytes)
		}
		return Key{ID: id, Alg: AlgHS256, Secret: raw}, nil
	case "ed25519":
		if len(raw) != ed25519.SeedSize {
			return Key{}, fmt.Errorf("key %q: an Ed25519 seed has %d bytes, not %d", id, ed25519.SeedSize, len(raw))
		}
		priv := ed25519.NewKeyFromSeed(raw)
		return Key{ID: id, Alg: AlgEdDSA, Private: priv, Public: priv.Public().(ed25519.PublicKey)}, nil
	}
	return Key{}, fmt.Errorf("key %q: algorithm %q is not ed25519 or hs256", id, alg)
}

// decodeBase64 accepts the standard and the URL alphabet, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "+/") {
		return base64.RawStdEncoding.DecodeString(s)
	}
	return base64.RawURLEncoding.DecodeString(s)
}
