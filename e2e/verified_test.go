package e2e_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// streams is how many ext_proc streams Envoy has opened so far.
func streams(t *testing.T, s *launch.Stack) int {
	t.Helper()
	n, err := s.EnvoyStat("http.ingress.ext_proc.streams_started")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// serverKeys reads the stack's signing keys, to build tokens as the server would.
func serverKeys(t *testing.T, s *launch.Stack) *affinity.Keyring {
	t.Helper()
	text, err := os.ReadFile(s.KeysPath)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := affinity.ParseKeyring(string(text))
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

// signSession is a token the stack's keys sign for sess.
func signSession(t *testing.T, ring *affinity.Keyring, sess affinity.Session) string {
	t.Helper()
	tok, err := affinity.NewTokenCodec(ring).Sign(sess, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestEstablishedSessionsSkipTheService runs in both Envoy-enforced modes:
// once a session has its cookie, Envoy routes it without an ext_proc stream.
func TestEstablishedSessionsSkipTheService(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"verified", "native"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, mode)
			before := streams(t, s)
			c := launch.NewClient(s.URL(""))
			first, _, err := c.Get("/")
			if err != nil {
				t.Fatal(err)
			}
			if got := streams(t, s) - before; got != 1 {
				t.Fatalf("a new session took %d ext_proc streams, want 1", got)
			}
			before = streams(t, s)
			for i := 2; i <= 21; i++ {
				r, resp, err := c.Get("/", "x-session-rebound", "forged", "x-session-successor", "forged")
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if _, forged := r.Told["x-session-rebound"]; forged || r.Told["x-session-successor"] != "" {
					t.Fatalf("request %d: the client's x-session-* headers reached the application: %v", i, r.Told)
				}
				if r.Host != first.Host || r.Count != i {
					t.Fatalf("request %d: %+v, want host %s count %d", i, r, first.Host, i)
				}
				if mode == "verified" && len(resp.Header.Values("Set-Cookie")) != 0 {
					t.Fatalf("request %d: Set-Cookie on an established session", i)
				}
			}
			if got := streams(t, s) - before; got != 0 {
				t.Fatalf("20 established requests took %d ext_proc streams, want 0", got)
			}
		})
	}
}

func TestVerifiedBadTokens(t *testing.T) {
	t.Parallel()
	s := newStack(t, "verified")
	ring := serverKeys(t, s)
	valid := startSessions(t, s, 1)[0]
	token := valid.c.Cookie("affinity")
	parts := strings.Split(token, ".")
	now := time.Now()
	// Every forged token asks for backend-3 first.
	want3 := s.Backends[2].Address() + "," + s.Backends[0].Address()
	payload := fmt.Sprintf(`{"sid":"forged","h":%q,"iat":%d,"exp":%d}`, want3, now.Unix(), now.Add(time.Hour).Unix())
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	otherKey, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sid": "forged", "h": want3, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}).
		SignedString(otherPriv)
	otherKey = reKid(otherKey, "k1")
	signer, _ := ring.Lookup("k1")
	confused := forge(`{"alg":"HS256","kid":"k1"}`, payload, signer.Public)
	old := signSession(t, ring, affinity.Session{ID: "forged", Host: want3, Start: now.Add(-25 * time.Hour), IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)})
	// Validly signed for another pool whose hosts this pool shares.
	otherPool := signSession(t, ring, affinity.Session{ID: "forged", Host: want3, Primary: base64.StdEncoding.EncodeToString([]byte(s.Backends[2].Address())),
		Start: now, IssuedAt: now, ExpiresAt: now.Add(time.Minute), Pool: "shop"})
	future := signSession(t, ring, affinity.Session{ID: "forged", Host: want3, Primary: base64.StdEncoding.EncodeToString([]byte(s.Backends[2].Address())),
		Start: now.Add(time.Hour), IssuedAt: now.Add(time.Hour), ExpiresAt: now.Add(time.Hour + time.Minute), Pool: "default"})
	tests := []struct{ name, cookie string }{
		{"payload swapped under the old signature", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + parts[2]},
		{"signed by another Ed25519 key under the same kid", otherKey},
		{"alg none", forge(`{"alg":"none","kid":"k1"}`, payload, nil)},
		{"HS256 keyed with the public key", confused},
		{"past the absolute timeout", old},
		{"truncated", token[:len(token)-9]},
		{"another pool's token", otherPool},
		{"issued an hour from now", future},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 4 {
				if expectNewSession(t, s, tt.cookie) == 0 {
					t.Fatalf("attempt %d: Envoy routed the bad token without the service", i)
				}
			}
		})
	}
}

// TestVerifiedLongLivedToken: a validly signed token of the pool whose exp
// is a hundred years away is not routed by Envoy (max_lifetime): the service
// refreshes it, same session and host, with a token of one refresh interval.
func TestVerifiedLongLivedToken(t *testing.T) {
	t.Parallel()
	s := newStack(t, "verified")
	ring := serverKeys(t, s)
	sess := startSessions(t, s, 1)[0]
	token := sess.c.Cookie("affinity")
	now := time.Now()
	long := signSession(t, ring, affinity.Session{ID: launch.TokenClaim(token, "sid"), Host: launch.TokenClaim(token, affinity.HostClaim),
		Primary: launch.TokenClaim(token, affinity.PrimaryClaim), Start: now, IssuedAt: now, ExpiresAt: now.AddDate(100, 0, 0), Pool: "default"})
	sess.c.SetCookie("affinity", long)
	before := streams(t, s)
	r, _, err := sess.c.Get("/")
	if err != nil || r.Host != sess.host || streams(t, s)-before != 1 {
		t.Fatalf("a hundred-year token: %+v, %v after %d streams; want its host through the service", r, err, streams(t, s)-before)
	}
	fresh := sess.c.Cookie("affinity")
	exp, _ := strconv.ParseInt(launch.TokenClaim(fresh, "exp"), 10, 64)
	if launch.TokenClaim(fresh, "sid") != launch.TokenClaim(token, "sid") || time.Until(time.Unix(exp, 0)) > 5*time.Minute+time.Second {
		t.Fatalf("re-issued %q: want the same session with a token of one refresh interval", fresh)
	}
	envoyAlone(t, s, sess, 5)
}

// reKid rewrites a token's header to name another kid (its signature then
// covers the old header, so it is a forgery either way).
func reKid(token, kid string) string {
	p := strings.Split(token, ".")
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","kid":"` + kid + `"}`))
	return hdr + "." + p[1] + "." + p[2]
}

// TestVerifiedTokenWithoutPrimary: a valid token issued before tokens named
// their primary (no p claim) still routes by itself, and its first response
// (one ext_proc stream: Envoy cannot mark its failovers) re-issues it with
// p; from then on it costs no stream.
func TestVerifiedTokenWithoutPrimary(t *testing.T) {
	t.Parallel()
	s := newStack(t, "verified")
	ring := serverKeys(t, s)
	sess := startSessions(t, s, 1)[0]
	token := sess.c.Cookie("affinity")
	old := affinity.Session{ID: launch.TokenClaim(token, "sid"), Host: launch.TokenClaim(token, affinity.HostClaim),
		Start: time.Now().Add(-time.Minute), IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	signed := signSession(t, ring, old)
	if launch.TokenClaim(signed, affinity.PrimaryClaim) != "" {
		t.Fatal("the old-style token has a p claim")
	}
	sess.c.SetCookie("affinity", signed)
	before := streams(t, s)
	r, resp, err := sess.c.Get("/")
	if err != nil || r.Host != sess.host || r.Count != 2 || streams(t, s)-before != 1 {
		t.Fatalf("token without p: %+v, %v after %d streams; want its host, count 2, one stream", r, err, streams(t, s)-before)
	}
	fresh := sess.c.Cookie("affinity")
	if len(resp.Header.Values("Set-Cookie")) != 1 || launch.TokenClaim(fresh, "sid") != old.ID || launch.TokenClaim(fresh, affinity.PrimaryClaim) == "" || s.CookieHost(fresh) != sess.host {
		t.Fatalf("re-issued %q: want the same session and host, with p", fresh)
	}
	envoyAlone(t, s, sess, 10)
}

// envoyAlone sends n requests of the session and checks that Envoy routes
// each to the session's host without an ext_proc stream.
func envoyAlone(t *testing.T, s *launch.Stack, ss *session, n int) {
	t.Helper()
	before := streams(t, s)
	for i := range n {
		if r, _, err := ss.c.Get("/"); err != nil || r.Host != ss.host {
			t.Fatalf("request %d: %v on %s, want %s", i, err, r.Host, ss.host)
		}
	}
	if got := streams(t, s) - before; got != 0 {
		t.Fatalf("%d requests took %d ext_proc streams, want 0", n, got)
	}
}

func TestVerifiedRefresh(t *testing.T) {
	t.Parallel()
	s := newStack(t, "verified")
	ring := serverKeys(t, s)
	sess := startSessions(t, s, 1)[0]
	token := sess.c.Cookie("affinity")
	// The same session, as the server signed it, but its exp has passed.
	claims := affinity.Session{ID: launch.TokenClaim(token, "sid"), Host: launch.TokenClaim(token, affinity.HostClaim),
		Start: time.Now().Add(-time.Hour), IssuedAt: time.Now().Add(-7 * time.Minute), ExpiresAt: time.Now().Add(-2 * time.Minute)}
	expired := signSession(t, ring, claims)
	sess.c.SetCookie("affinity", expired)
	before := streams(t, s)
	r, resp, err := sess.c.Get("/")
	if err != nil {
		t.Fatal(err)
	}
	if streams(t, s)-before != 1 || r.Host != sess.host || r.Count != 2 {
		t.Fatalf("expired token: %+v after %d streams; want the service once, host %s, count 2", r, streams(t, s)-before, sess.host)
	}
	if len(resp.Header.Values("Set-Cookie")) == 0 {
		t.Fatal("refresh without a new cookie")
	}
	fresh := sess.c.Cookie("affinity")
	if launch.TokenClaim(fresh, "sid") != claims.ID || s.CookieHost(fresh) != sess.host {
		t.Fatalf("refreshed token names another session or host")
	}
	// Refreshed: Envoy alone again.
	envoyAlone(t, s, sess, 1)
}

func TestHostRemovedFromEnvoysCluster(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"opaque", "verified", "native"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, mode)
			sessions := spreadSessions(t, s, 60)
			// Verified tokens name the successor second, and the service
			// lists it second in opaque mode: Envoy skips a host it does
			// not have and takes the next. Envoy's own cookie names one
			// host only.
			successor := map[*session]string{}
			for _, ss := range sessions {
				_, next, _ := strings.Cut(launch.TokenClaim(ss.c.Cookie("affinity"), affinity.HostClaim), ",")
				for _, b := range s.Backends {
					if b.Address() == next {
						successor[ss] = b.Name
					}
				}
				if mode == "opaque" {
					// The successor among the other two hosts, as the service ranks them.
					successor[ss] = successorOf(s, launch.TokenClaim(ss.c.Cookie("affinity"), "sid"), ss.host)
				}
			}
			if err := s.WriteEndpoints(0, 2); err != nil {
				t.Fatal(err)
			}
			waitMembers(t, s, 2)
			before := streams(t, s)
			var onRemoved, failed, otherMoved int
			landed := map[*session]string{}
			for _, ss := range sessions {
				r, _, err := ss.c.Get("/")
				switch {
				case err != nil:
					failed++
				case ss.host == "backend-2":
					onRemoved++
					landed[ss] = r.Host
					if r.Host == "backend-2" {
						t.Errorf("a session reached the removed host")
					}
					if mode != "native" && r.Host != successor[ss] {
						t.Errorf("session of the removed host served by %s, its successor is %s", r.Host, successor[ss])
					}
				case r.Host != ss.host:
					otherMoved++
				}
			}
			// Where a moved session landed, it stays.
			for ss, host := range landed {
				if r, _, err := ss.c.Get("/"); err != nil || r.Host != host {
					t.Errorf("moved session: %v, served by %s after %s", err, r.Host, host)
				}
			}
			t.Logf("%s, host removed from Envoy's cluster: %d sessions on it moved, %d failed requests, %d other sessions moved (of %d), %d ext_proc streams",
				mode, onRemoved, failed, otherMoved, len(sessions)-onRemoved, streams(t, s)-before)
			if failed != 0 || otherMoved != 0 || onRemoved == 0 {
				t.Fatalf("failed %d, other sessions moved %d, sessions on the removed host %d", failed, otherMoved, onRemoved)
			}
		})
	}
}

// successorOf is the session's best host other than own, as every replica
// of the service ranks the stack's backends.
func successorOf(s *launch.Stack, sid, own string) string {
	var hosts []affinity.Host
	for _, b := range s.Backends {
		hosts = append(hosts, affinity.NewHost(b.Name, b.Address(), 1))
	}
	for _, h := range affinity.NewHostSet(hosts).Choices(sid, 3) {
		if h.ID != own {
			return h.ID
		}
	}
	return ""
}

// waitMembers waits until Envoy's cluster "app" has n hosts.
func waitMembers(t *testing.T, s *launch.Stack, n int) {
	t.Helper()
	if err := s.WaitEnvoyHosts(context.Background(), n); err != nil {
		t.Fatal(err)
	}
}

func TestEnvoyEnforcesWithTheServiceKilled(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"verified", "native"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, mode)
			sessions := startSessions(t, s, 30)
			s.Server.Kill()
			served := 0
			for i, ss := range sessions {
				for range 3 {
					r, _, err := ss.c.Get("/")
					if err != nil {
						t.Fatalf("session %d: %v", i, err)
					}
					if r.Host != ss.host {
						t.Fatalf("session %d of %s served by %s with the service down", i, ss.host, r.Host)
					}
					served++
				}
			}
			for i := range 10 {
				if _, _, err := launch.NewClient(s.URL("")).Get("/"); err != nil {
					t.Fatalf("new session %d with the service down: %v", i, err)
				}
			}
			t.Logf("%s, service killed: %d of %d established requests served on their own host; 10 of 10 new sessions served", mode, served, served)
		})
	}
}

func TestVerifiedKeyRotationUnderLoad(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "verified", RefreshInterval: 2 * time.Second, SignDelay: time.Second})
	sessions := startSessions(t, s, 40)
	var failed, moved, requests atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// About 500 requests a second per worker: load, not a flood.
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for {
				for _, ss := range sessions[w*10 : w*10+10] {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					requests.Add(1)
					r, _, err := ss.c.Get("/")
					switch {
					case err != nil:
						failed.Add(1)
					case r.Host != ss.host:
						moved.Add(1)
					}
				}
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopLoad()
	startStreams := streams(t, s)
	// Under load: a new key, first in the file, the old one kept to verify.
	old, err := os.ReadFile(s.KeysPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.KeysPath, []byte(launch.NewKeyLine("k2", "ed25519")+"\n"+string(old)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Wait until every session carries a k2 token and Envoy verifies them
	// itself (its JWKS cache has fetched k2): the rotation is complete.
	err = launch.Eventually(context.Background(), 60*time.Second, func() error {
		for i, ss := range sessions {
			if kid := tokenKid(ss.c.Cookie("affinity")); kid != "k2" {
				return fmt.Errorf("session %d still has a %s token", i, kid)
			}
		}
		before := streams(t, s)
		if _, _, err := sessions[0].c.Get("/"); err != nil {
			return err
		}
		if streams(t, s) != before {
			return fmt.Errorf("Envoy does not verify k2 tokens yet")
		}
		return nil
	})
	stopLoad()
	t.Logf("key rotation under load: %d requests, %d failed, %d served by another host, %d ext_proc streams",
		requests.Load(), failed.Load(), moved.Load(), streams(t, s)-startStreams)
	if err != nil {
		t.Fatal(err)
	}
	if failed.Load() != 0 || moved.Load() != 0 {
		t.Fatalf("%d failed requests, %d moved", failed.Load(), moved.Load())
	}
}

// tokenKid is the kid in a token's header.
func tokenKid(token string) string {
	hdr, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		return ""
	}
	_, rest, _ := strings.Cut(string(hdr), `"kid":"`)
	kid, _, _ := strings.Cut(rest, `"`)
	return kid
}

// TestVerifiedHS256WithLocalJWKS: the HS256 option of verified mode. Envoy
// reads the key set from a file that `envoy-affinity jwks -with-secrets`
// wrote from the service's keys file; verified.yaml's remote_jwks block is
// replaced by local_jwks, as the README describes.
func TestVerifiedHS256WithLocalJWKS(t *testing.T) {
	t.Parallel()
	yaml, err := os.ReadFile(envoyYAML("verified.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(yaml)
	start := strings.Index(text, "                  remote_jwks:")
	end := strings.Index(text, "              rules:")
	if start < 0 || end < start {
		t.Fatal("verified.yaml has no remote_jwks block before its rules")
	}
	variant := text[:start] + "                  local_jwks: {filename: jwks.json}\n" + text[end:]
	path := filepath.Join(t.TempDir(), "verified-hs256.yaml")
	if err := os.WriteFile(path, []byte(variant), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStackWith(t, launch.Options{Mode: "verified", KeyAlg: "hs256", EnvoyYAML: path,
		BeforeEnvoy: func(s *launch.Stack) error {
			out, err := exec.Command(s.ServerBinary(), "jwks", "-config", s.ConfigPath, "-with-secrets",
				"-out", filepath.Join(s.Dir(), "jwks.json")).CombinedOutput()
			if err != nil {
				return fmt.Errorf("jwks: %v: %s", err, out)
			}
			return nil
		}})
	ss := startSessions(t, s, 1)[0]
	if kid := tokenKid(ss.c.Cookie("affinity")); kid != "k1" {
		t.Fatalf("token kid %q", kid)
	}
	before := streams(t, s)
	for i := 2; i <= 11; i++ {
		r, _, err := ss.c.Get("/")
		if err != nil || r.Host != ss.host || r.Count != i {
			t.Fatalf("request %d: %+v %v", i, r, err)
		}
	}
	if got := streams(t, s) - before; got != 0 {
		t.Fatalf("10 established requests with an HS256 token took %d ext_proc streams, want 0", got)
	}
}

// TestCookieParsingMatchesEnvoy: Envoy's jwt_authn and the service read
// the same value out of the same Cookie headers. Two valid tokens, A on
// backend-1 and B on backend-2, and a broken one, X, are combined as a
// client could; when Envoy's pick is valid it routes by it alone, and when
// it is not the service, which must pick the same value, starts a new
// session. A service that trimmed what Envoy does not would honour A where
// Envoy saw garbage.
func TestCookieParsingMatchesEnvoy(t *testing.T) {
	t.Parallel()
	s := newStack(t, "verified")
	ring := serverKeys(t, s)
	now := time.Now()
	token := func(id string, primary, successor int) string {
		a, b := s.Backends[primary].Address(), s.Backends[successor].Address()
		tok := signSession(t, ring, affinity.Session{ID: id, Host: a + "," + b, Primary: base64.StdEncoding.EncodeToString([]byte(a)),
			Start: now, IssuedAt: now, ExpiresAt: now.Add(time.Minute), Pool: "default"})
		return tok
	}
	a, b, x := token("session-a", 0, 1), token("session-b", 1, 0), "not-a-token"
	tests := []struct {
		name    string
		cookies []string
		want    string // the session Envoy routes by, or "" for a new one the service starts
	}{
		{"one cookie", []string{"affinity=" + a}, "session-a"},
		{"quoted", []string{`affinity="` + a + `"`}, "session-a"},
		{"spaces before the name", []string{"x=1;   affinity=" + a}, "session-a"},
		{"a space before '=' is part of the name", []string{"affinity =" + a + "; affinity=" + b}, "session-b"},
		{"a tab before the name is part of it", []string{"x=1;\taffinity=" + a + "; affinity=" + b}, "session-b"},
		{"a space after '=' is part of the value", []string{"affinity= " + a + "; affinity=" + b}, ""},
		// The value is "A " in both; Envoy's base64 decoding ignores the
		// trailing space, and so does the service's verification.
		{"a space before ';' ends up after the signature", []string{"affinity=" + a + " ; x=1"}, "session-a"},
		{"the first of two in one header", []string{"affinity=" + x + "; affinity=" + a}, ""},
		{"the first of two headers", []string{"affinity=" + x, "affinity=" + b}, ""},
		{"the first of two headers, valid", []string{"affinity=" + a, "affinity=" + x}, "session-a"},
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, s.URL("/"), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tt.cookies {
				req.Header.Add("Cookie", c)
			}
			before := streams(t, s)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			asked := streams(t, s) - before
			var fresh string
			for _, sc := range resp.Header.Values("Set-Cookie") {
				if v, ok := strings.CutPrefix(strings.SplitN(sc, ";", 2)[0], "affinity="); ok {
					fresh = v
				}
			}
			switch {
			case resp.StatusCode != http.StatusOK:
				t.Fatalf("status %d", resp.StatusCode)
			case tt.want != "" && (asked != 0 || fresh != ""):
				t.Fatalf("Envoy should route by %s alone: %d streams, new cookie %v", tt.want, asked, fresh != "")
			case tt.want == "" && (asked != 1 || fresh == "" || strings.HasPrefix(launch.TokenClaim(fresh, "sid"), "session-")):
				t.Fatalf("the service should start a new session: %d streams, cookie for %q", asked, launch.TokenClaim(fresh, "sid"))
			}
		})
	}
}
