package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// envelopeStack runs the pool with an application session header the
// backends start (x-session-id, in a signed envelope): opaque.yaml as it
// is, or verified.yaml with launch.SessionHeaderChanges. In the verified
// mode it waits until Envoy has the service's keys.
func envelopeStack(t *testing.T, mode string) *launch.Stack {
	t.Helper()
	opts := launch.Options{Mode: mode, BackendArgs: []string{"-session-header", "X-Session-Id"},
		KeySources: []launch.KeySource{{Type: "upstream_header", Name: "X-Session-Id", Envelope: "signed"}}}
	if mode == "verified" {
		root, err := launch.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(root, "envoy", "verified.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		text, err := launch.ApplyChanges(string(data), launch.SessionHeaderChanges("x-session-id", "default"))
		if err != nil {
			t.Fatal(err)
		}
		opts.EnvoyYAML = filepath.Join(t.TempDir(), "verified-envelope.yaml")
		if err := os.WriteFile(opts.EnvoyYAML, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := newStackWith(t, opts)
	if mode == "verified" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.WaitJWKS(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// envelopeClaims reads what an envelope carries (not its signature).
func envelopeClaims(t *testing.T, token string) (sid, hosts string) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("%q is not an envelope", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ SID, H string }
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c.SID, c.H
}

// TestEnvelopeSessionHeader: an application session header the backend
// starts reaches the client in a signed envelope; the envelope keeps the
// session on its host and the backend only ever sees its own value (in the
// verified mode with no call to the service), also when the client adds a
// value of its own after the envelope; a forged envelope neither chooses
// the host nor puts a value of the client's choosing in the header; when
// the host leaves, the session goes to its successor with its value.
func TestEnvelopeSessionHeader(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"opaque", "verified"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := envelopeStack(t, mode)
			c := launch.NewClient(s.URL(""))
			first, resp, err := c.Get("/")
			if err != nil {
				t.Fatal(err)
			}
			envelope := resp.Header.Get("X-Session-Id")
			if sid, _ := envelopeClaims(t, envelope); sid != first.Session || envelope == first.Session {
				t.Fatalf("the client got %q for the backend's session %q, want an envelope of it", envelope, first.Session)
			}

			before := streams(t, s)
			for i := 2; i <= 11; i++ {
				r, resp, err := c.Get("/", "X-Session-Id", envelope)
				if err != nil {
					t.Fatal(err)
				}
				if r.Host != first.Host || r.Count != i || r.Session != first.Session {
					t.Fatalf("request %d: %+v, want %s count %d session %s", i, r, first.Host, i, first.Session)
				}
				if got := resp.Header.Get("X-Session-Id"); got != "" && got != envelope {
					t.Fatalf("request %d: the response carries %q, not the client's envelope", i, got)
				}
			}
			if got := streams(t, s) - before; mode == "verified" && got != 0 {
				t.Fatalf("10 requests with an envelope took %d ext_proc streams, want 0", got)
			}
			// A second value after the envelope does not reach the backend:
			// the header is the session's value alone (in the verified mode
			// Envoy leaves such a request to the service).
			if r, _, err := c.Get("/", "X-Session-Id", envelope, "X-Session-Id", "victim"); err != nil || r.Host != first.Host || r.Session != first.Session {
				t.Fatalf("an envelope and a value of the client's: %+v, %v", r, err)
			}

			// A forged envelope: the session's claims, another host, the
			// signature of a key the service does not have.
			ring, err := affinity.ParseKeyring(launch.NewKeyLine("k1", "ed25519"))
			if err != nil {
				t.Fatal(err)
			}
			target := s.Backends[2]
			if target.Name == first.Host {
				target = s.Backends[1]
			}
			hosts := target.Name
			if mode == "verified" {
				hosts = target.Address()
			}
			forged, err := affinity.NewTokenCodec(ring).Sign(affinity.Session{ID: "victim", Host: hosts, Start: time.Now(), IssuedAt: time.Now(),
				ExpiresAt: time.Now().Add(time.Hour), Pool: "default", Envelope: true}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			landed := map[string]int{}
			for range 12 {
				r, _, err := launch.NewClient(s.URL("")).Get("/", "X-Session-Id", forged)
				if err != nil {
					t.Fatal(err)
				}
				if r.Session != forged {
					t.Fatalf("a forged envelope reached the backend as %q, want it unchanged", r.Session)
				}
				landed[r.Host]++
			}
			if landed[target.Name] == 12 {
				t.Fatalf("12 forged envelopes all went to the host they named: %v", landed)
			}

			// The session's host leaves: the session goes to its successor,
			// which gets the backend's own value (unknown there: count 1).
			var keep []int
			for i, b := range s.Backends {
				if b.Name != first.Host {
					keep = append(keep, i)
				}
			}
			if err := s.SetHosts(context.Background(), keep...); err != nil {
				t.Fatal(err)
			}
			r, _, err := c.Get("/", "X-Session-Id", envelope)
			if err != nil {
				t.Fatal(err)
			}
			if r.Host == first.Host || r.Session != first.Session || r.Count != 1 {
				t.Fatalf("after its host left: %+v, want another host with session %s", r, first.Session)
			}
		})
	}
}
