package e2e_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

func TestStickySession(t *testing.T) {
	t.Parallel()
	s := newStack(t, "opaque")
	c := launch.NewClient(s.URL(""))
	first, resp, err := c.Get("/")
	if err != nil {
		t.Fatal(err)
	}
	// Our cookie and the application's own both reach the client.
	var ours, app bool
	for _, sc := range resp.Header.Values("Set-Cookie") {
		ours = ours || strings.HasPrefix(sc, "affinity=")
		app = app || strings.HasPrefix(sc, "app_session=")
	}
	if !ours || !app {
		t.Fatalf("Set-Cookie headers %q: want affinity and app_session", resp.Header.Values("Set-Cookie"))
	}
	started, _ := s.EnvoyStat("http.ingress.ext_proc.streams_started")
	sentBefore, _ := s.EnvoyStat("http.ingress.ext_proc.stream_msgs_sent")
	failoverBefore, _ := s.EnvoyStat("http.ingress.ext_proc.failover.streams_started")
	for i := 2; i <= 21; i++ {
		r, resp, err := c.Get("/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if r.Host != first.Host || r.Count != i {
			t.Fatalf("request %d: %+v, want host %s count %d", i, r, first.Host, i)
		}
		if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
			t.Fatalf("request %d: established session got Set-Cookie %q", i, sc)
		}
	}
	// An established session costs one message per request: no response phase.
	startedAfter, _ := s.EnvoyStat("http.ingress.ext_proc.streams_started")
	sentAfter, _ := s.EnvoyStat("http.ingress.ext_proc.stream_msgs_sent")
	if streams, msgs := startedAfter-started, sentAfter-sentBefore; streams != 20 || msgs != 20 {
		t.Fatalf("20 established requests: %d streams, %d messages; want 20 and 20", streams, msgs)
	}
	// None of them went to the affinity-failover filter: it is for
	// responses another host served.
	if n, _ := s.EnvoyStat("http.ingress.ext_proc.failover.streams_started"); n != failoverBefore {
		t.Fatalf("20 established requests opened %d affinity-failover streams, want 0", n-failoverBefore)
	}
}

// TestNewSessionsSpread: new sessions are placed by hashing random session
// ids, so without a cap their spread is binomial (300 over 3 hosts: 100 ± 8
// each) and a host gets over 40% in about 2% of runs; the loose bounds below
// fail in fewer than one run in a billion. With bounded loads (c = 1.2) no
// host can pass ⌈1.2 × 100⌉ = 120, 40%, in any run.
func TestNewSessionsSpread(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		loadFactor float64
		max        int
	}{
		{"hashing alone", 0, 150},
		{"bounded loads 1.2", 1.2, 120},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStackWith(t, launch.Options{Mode: "opaque", LoadFactor: tt.loadFactor})
			count := map[string]int{}
			for _, ss := range startSessions(t, s, 300) {
				count[ss.host]++
			}
			t.Logf("%s: 300 new sessions over 3 equal hosts: %v", tt.name, count)
			if len(count) != 3 {
				t.Fatalf("sessions reached %d hosts, want 3", len(count))
			}
			for h, n := range count {
				if n > tt.max || n < 300-2*tt.max {
					t.Errorf("%s got %d of 300 sessions (allowed %d..%d)", h, n, 300-2*tt.max, tt.max)
				}
			}
		})
	}
}

func TestHostRemovedFromConfig(t *testing.T) {
	t.Parallel()
	s := newStack(t, "opaque")
	sessions := spreadSessions(t, s, 90)
	removed := "backend-2"
	// The agreed successor is a function of the session id and the host set
	// alone: any replica computes the same.
	remaining := affinity.NewHostSet([]affinity.Host{
		affinity.NewHost(s.Backends[0].Name, s.Backends[0].Address(), 1),
		affinity.NewHost(s.Backends[2].Name, s.Backends[2].Address(), 1),
	})
	if err := s.WriteConfig(0, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitPoolHosts(context.Background(), "backend-1", "backend-3"); err != nil {
		t.Fatal(err)
	}
	var onRemoved, moved, movedElsewhere int
	landed := map[*session]string{}
	for _, ss := range sessions {
		r, resp, err := ss.c.Get("/")
		if err != nil {
			t.Fatalf("after removal: %v", err)
		}
		if ss.host == removed {
			onRemoved++
			if r.Host == removed {
				t.Fatalf("a session still reached the removed host")
			}
			if sc := resp.Header.Values("Set-Cookie"); len(sc) == 0 {
				t.Fatalf("re-bound session got no new cookie")
			}
			moved++
			landed[ss] = r.Host
			sid := launch.TokenClaim(ss.c.Cookie("affinity"), "sid")
			if want := remaining.Choices(sid, 1)[0].ID; r.Host != want {
				t.Errorf("session moved to %s, its agreed successor is %s", r.Host, want)
			}
			continue
		}
		if r.Host != ss.host {
			movedElsewhere++
			t.Errorf("session of %s moved to %s", ss.host, r.Host)
		}
	}
	// Each moved session has one successor: it stays there.
	for ss, host := range landed {
		for range 3 {
			r, _, err := ss.c.Get("/")
			if err != nil {
				t.Fatal(err)
			}
			if r.Host != host {
				t.Fatalf("moved session went to %s, then %s", host, r.Host)
			}
		}
	}
	t.Logf("host removal: %d of %d sessions on %s moved, %d sessions of other hosts moved (of %d)",
		moved, onRemoved, removed, movedElsewhere, len(sessions)-onRemoved)
	if onRemoved == 0 {
		t.Fatal("no session was on the removed host")
	}
}

// forge builds a compact HS256 JWS by hand, as an attacker would.
func forge(header, payload string, secret []byte) string {
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	if secret == nil {
		return signing + "."
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func TestInvalidCookiesAreNewSessions(t *testing.T) {
	t.Parallel()
	s := newStack(t, "opaque")
	valid := startSessions(t, s, 1)[0]
	token := valid.c.Cookie("affinity")
	parts := strings.Split(token, ".")
	exp := time.Now().Add(time.Hour).Unix()
	payload := fmt.Sprintf(`{"sid":"forged","h":"backend-3","iat":%d,"exp":%d}`, time.Now().Unix(), exp)
	otherKey := []byte("0123456789abcdef0123456789abcdef")
	// A token signed with the server's own key whose lifetime has passed.
	keys, err := os.ReadFile(s.KeysPath)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := affinity.ParseKeyring(string(keys))
	if err != nil {
		t.Fatal(err)
	}
	// Past its absolute timeout (24 h), so not a refresh.
	expired, err := affinity.NewTokenCodec(ring).Sign(affinity.Session{
		ID: "forged", Host: "backend-3", Start: time.Now().Add(-25 * time.Hour), IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct{ name, cookie string }{
		{"payload swapped under the old signature", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + parts[2]},
		{"truncated", token[:len(token)-7]},
		{"re-signed with another key", forge(`{"alg":"HS256","kid":"k1","typ":"JWT"}`, payload, otherKey)},
		{"alg none", forge(`{"alg":"none","kid":"k1"}`, payload, nil)},
		{"expired", expired},
		{"garbage", "%%%not.a.token!"},
		{"oversized", strings.Repeat("A", 6000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 5 {
				expectNewSession(t, s, tt.cookie)
			}
		})
	}
}

func TestClientCannotChooseHost(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"opaque", "verified"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, mode)
			sessions := startSessions(t, s, 12)
			for _, ss := range sessions {
				for _, b := range s.Backends {
					if b.Name == ss.host {
						continue
					}
					r, _, err := ss.c.Get("/",
						extproc.DestinationKey, b.Address(),
						extproc.ServedKey, b.Address(),
						"x-envoy-original-dst-host", b.Address())
					if err != nil {
						t.Fatal(err)
					}
					if r.Host != ss.host {
						t.Fatalf("session of %s asked for %s and reached %s", ss.host, b.Name, r.Host)
					}
				}
			}
			// New sessions asking for a host get the host the server chose.
			for range 30 {
				c := launch.NewClient(s.URL(""))
				r, _, err := c.Get("/", extproc.DestinationKey, s.Backends[0].Address())
				if err != nil {
					t.Fatal(err)
				}
				if h := s.CookieHost(c.Cookie("affinity")); h != r.Host {
					t.Fatalf("new session served by %s, placed on %s", r.Host, h)
				}
			}
		})
	}
}

func TestFailOpenAndBack(t *testing.T) {
	t.Parallel()
	s := newStack(t, "opaque")
	sessions := startSessions(t, s, 30)
	s.Server.Kill()

	// Down: every request still served, each session on one host (Envoy's
	// Maglev fallback hashes the session cookie).
	stayed := 0
	for i, ss := range sessions {
		first, _, err := ss.c.Get("/")
		if err != nil {
			t.Fatalf("session %d with the server down: %v", i, err)
		}
		for range 3 {
			r, _, err := ss.c.Get("/")
			if err != nil {
				t.Fatalf("session %d with the server down: %v", i, err)
			}
			if r.Host != first.Host {
				t.Fatalf("session %d moved between %s and %s while the server was down", i, first.Host, r.Host)
			}
		}
		if first.Host == ss.host {
			stayed++
		}
	}
	for range 10 {
		if _, _, err := launch.NewClient(s.URL("")).Get("/"); err != nil {
			t.Fatalf("new session with the server down: %v", err)
		}
	}
	failOpen, _ := s.EnvoyStat("http.ingress.ext_proc.failure_mode_allowed")
	t.Logf("server down: 130 requests served, %d failed open; %d of 30 sessions happened to stay on their host", failOpen, stayed)
	if failOpen < 130 {
		t.Fatalf("failure_mode_allowed = %d, want every request (130) to have failed open", failOpen)
	}

	// Back: each session returns to the host its cookie names.
	if err := s.StartServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, ss := range sessions {
		err := launch.Eventually(context.Background(), 10*time.Second, func() error {
			r, _, err := ss.c.Get("/")
			if err != nil {
				return err
			}
			if r.Host != ss.host {
				return fmt.Errorf("session %d on %s, its cookie names %s", i, r.Host, ss.host)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
