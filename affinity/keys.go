package affinity

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// MinKeyBytes is the shortest signing secret accepted: HS256 is only as strong
// as its key, and RFC 7518 asks for at least the hash size.
const MinKeyBytes = 32

// Key is one HMAC signing key with the id that tokens name in their kid header.
type Key struct {
	ID     string
	Secret []byte
}

// Keyring holds the keys in order: the first signs new tokens, all of them
// verify, so a new key can be put first while tokens signed by the old one
// stay valid until they expire.
type Keyring struct {
	keys []Key
}

// Signer returns the key that signs new tokens.
func (k *Keyring) Signer() Key { return k.keys[0] }

// Lookup returns the key with the given id.
func (k *Keyring) Lookup(id string) (Key, bool) {
	for _, key := range k.keys {
		if key.ID == id {
			return key, true
		}
	}
	return Key{}, false
}

// IDs lists the key ids, the signer first.
func (k *Keyring) IDs() []string {
	ids := make([]string, len(k.keys))
	for i, key := range k.keys {
		ids[i] = key.ID
	}
	return ids
}

// ParseKeyring reads keys written one per line (or separated by commas, as an
// environment variable allows) as "id:base64-secret". Blank lines and lines
// starting with # are ignored. The first key signs. Every problem is reported,
// each with its line number.
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
		errs = append(errs, errors.New("no keys: write one key per line as id:base64-secret (see the keygen command)"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &ring, nil
}

func parseKey(entry string) (Key, error) {
	id, secret, ok := strings.Cut(entry, ":")
	id = strings.TrimSpace(id)
	if !ok || id == "" {
		return Key{}, errors.New(`a key is written "id:base64-secret"`)
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
	if len(raw) < MinKeyBytes {
		return Key{}, fmt.Errorf("key %q: secret has %d bytes, at least %d are needed", id, len(raw), MinKeyBytes)
	}
	return Key{ID: id, Secret: raw}, nil
}

// decodeBase64 accepts the standard and the URL alphabet, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "+/") {
		return base64.RawStdEncoding.DecodeString(s)
	}
	return base64.RawURLEncoding.DecodeString(s)
}
