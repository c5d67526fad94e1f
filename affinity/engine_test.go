package affinity

import (
	"strings"
	"testing"
	"time"
)

// testEngine builds an opaque-mode engine over the named hosts ("web-1" at 127.0.0.1:80 ...).
func testEngine(t *testing.T, clock *fixedClock, names ...string) *Engine {
	t.Helper()
	return NewEngine(testSnapshot(t, names...), clock.now)
}

func testSnapshot(t *testing.T, names ...string) *Snapshot {
	t.Helper()
	return modeSnapshot(t, ModeOpaque, names...)
}

func modeSnapshot(t testing.TB, mode Mode, names ...string) *Snapshot {
	t.Helper()
	var b strings.Builder
	b.WriteString("keys: {env: K}\npools:\n  - mode: " + string(mode) + "\n    session: {refresh_interval: 5m, absolute_timeout: 1h}\n    hosts:\n")
	for _, n := range names {
		b.WriteString("      - {name: " + n + ", address: '127.0.0." + strings.TrimPrefix(n, "web-") + ":80'}\n")
	}
	return mustBuild(t, b.String())
}

func cookieOf(t *testing.T, setCookie string) string {
	t.Helper()
	v, _, _ := strings.Cut(setCookie, ";")
	if !strings.HasPrefix(v, "affinity=") {
		t.Fatalf("set-cookie %q", setCookie)
	}
	return v
}

func TestDecideLifecycle(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := testEngine(t, clock, "web-1", "web-2", "web-3")

	d := e.Decide(Request{Cluster: "app"})
	if d.Outcome != OutcomeNew || d.Reason != ReasonNoCookie || len(d.Hosts) != 2 || d.SetCookie == "" {
		t.Fatalf("new session: %+v", d)
	}
	if !strings.Contains(d.SetCookie, "; Path=/; Secure; HttpOnly; SameSite=Lax") || strings.Contains(d.SetCookie, "Max-Age") {
		t.Fatalf("cookie attributes: %q", d.SetCookie)
	}
	cookie := cookieOf(t, d.SetCookie)
	first := d

	// Established: same host, same successor, no new cookie; other cookies around it are ignored.
	d = e.Decide(Request{Cluster: "app", CookieHeaders: []string{"other=1", "x=2; " + cookie + "; y=3"}})
	if d.Outcome != OutcomePinned || d.SetCookie != "" || d.Hosts[0] != first.Hosts[0] || d.Hosts[1] != first.Hosts[1] {
		t.Fatalf("pinned: %+v, first %+v", d, first)
	}

	// Hosts added: the session stays pinned to its host.
	e.Update(testSnapshot(t, "web-1", "web-2", "web-3", "web-4", "web-5", "web-6"))
	if d = e.Decide(Request{Cluster: "app", CookieHeaders: []string{cookie}}); d.Outcome != OutcomePinned || d.Hosts[0] != first.Hosts[0] {
		t.Fatalf("after hosts were added: %+v", d)
	}

	// Its host leaves: re-bound to the successor it was given, same session id.
	var remaining []string
	for _, n := range []string{"web-1", "web-2", "web-3"} {
		if "127.0.0."+strings.TrimPrefix(n, "web-")+":80" != first.Hosts[0] {
			remaining = append(remaining, n)
		}
	}
	e.Update(testSnapshot(t, remaining...))
	d = e.Decide(Request{Cluster: "app", CookieHeaders: []string{cookie}})
	if d.Outcome != OutcomeRebound || d.Reason != ReasonHostLeft || d.Hosts[0] != first.Hosts[1] || d.SetCookie == "" {
		t.Fatalf("host left: %+v, want primary %s", d, first.Hosts[1])
	}
	sOld, _ := e.Snapshot().Codec.Verify(strings.TrimPrefix(cookie, "affinity="), clock.t)
	sNew, err := e.Snapshot().Codec.Verify(strings.TrimPrefix(cookieOf(t, d.SetCookie), "affinity="), clock.t)
	if err != nil || sNew.ID != sOld.ID || !sNew.ExpiresAt.Equal(sOld.ExpiresAt) {
		t.Fatalf("re-bound token %+v (%v), old %+v", sNew, err, sOld)
	}

	// Past the absolute timeout: a new session.
	clock.t = t0.Add(time.Hour + time.Second)
	if d = e.Decide(Request{Cluster: "app", CookieHeaders: []string{cookieOf(t, d.SetCookie)}}); d.Outcome != OutcomeNew || d.Reason != ReasonExpired {
		t.Fatalf("expired: %+v", d)
	}
}

func TestDecideBadCookies(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := testEngine(t, clock, "web-1", "web-2")
	for _, c := range []string{"affinity=", "affinity=garbage", "affinity=a.b.c", "affinity=" + strings.Repeat("x", 5000)} {
		d := e.Decide(Request{CookieHeaders: []string{c}})
		if d.Outcome != OutcomeNew || d.Reason != ReasonInvalidCookie || d.SetCookie == "" {
			t.Errorf("cookie %.30q: %+v", c, d)
		}
	}
}

func TestDecidePoolSelection(t *testing.T) {
	clock := &fixedClock{t: t0}
	single := testEngine(t, clock, "web-1")
	if d := single.Decide(Request{Cluster: "anything"}); d.Outcome != OutcomeNew || d.Pool != DefaultPoolName {
		t.Fatalf("single pool takes every cluster: %+v", d)
	}
	cfg, err := ParseConfig("t.yaml", []byte("keys: {env: K}\npools:\n  - name: a\n    hosts: [{address: '127.0.0.1:1'}]\n  - name: b\n    hosts: [{address: '127.0.0.2:1'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	multi := NewEngine(cfg.Build(testKeyring(t)), clock.now)
	tests := []struct {
		cluster string
		outcome Outcome
		host    string
	}{{"a", OutcomeNew, "127.0.0.1:1"}, {"b", OutcomeNew, "127.0.0.2:1"}, {"c", OutcomePassThrough, ""}, {"", OutcomePassThrough, ""}}
	for _, tt := range tests {
		d := multi.Decide(Request{Cluster: tt.cluster})
		if d.Outcome != tt.outcome || (tt.host != "" && d.Hosts[0] != tt.host) {
			t.Errorf("cluster %q: %+v", tt.cluster, d)
		}
	}
}

func TestDecideSpreadsNewSessions(t *testing.T) {
	e := testEngine(t, &fixedClock{t: t0}, "web-1", "web-2", "web-3")
	count := map[string]int{}
	for range 3000 {
		count[e.Decide(Request{}).Hosts[0]]++
	}
	for h, c := range count {
		if c < 850 || c > 1150 {
			t.Errorf("%s got %d of 3000 new sessions", h, c)
		}
	}
}

// BenchmarkDecidePinned is the decision for an established cookie session
// (opaque mode: the service sees every request), per signing algorithm.
func BenchmarkDecidePinned(b *testing.B) {
	for _, key := range []string{"k1:hs256:" + testSecret, "e1:ed25519:" + edSeed} {
		cfg, err := ParseConfig("b.yaml", []byte("keys: {env: K}\npools:\n  - mode: opaque\n    hosts: [{address: '127.0.0.1:1'}, {address: '127.0.0.2:1'}, {address: '127.0.0.3:1'}]\n"))
		if err != nil {
			b.Fatal(err)
		}
		e := NewEngine(cfg.Build(testKeyring(b, key)), func() time.Time { return t0 })
		cookie := cookieHeader(e.Decide(Request{}).SetCookie)
		req := Request{CookieHeaders: []string{cookie}}
		b.Run(key[:2], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := e.Decide(req); d.Outcome != OutcomePinned {
					b.Fatal(d)
				}
			}
		})
	}
}

// BenchmarkDecideNew is the decision for a new session: placement and a
// signed token.
func BenchmarkDecideNew(b *testing.B) {
	for _, key := range []string{"k1:hs256:" + testSecret, "e1:ed25519:" + edSeed} {
		cfg, err := ParseConfig("b.yaml", []byte("keys: {env: K}\npools:\n  - mode: verified\n    hosts: [{address: '127.0.0.1:1'}, {address: '127.0.0.2:1'}, {address: '127.0.0.3:1'}]\n"))
		if err != nil {
			b.Fatal(err)
		}
		e := NewEngine(cfg.Build(testKeyring(b, key)), func() time.Time { return t0 })
		b.Run(key[:2], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(Request{})
			}
		})
	}
}

func cookieHeader(setCookie string) string {
	v, _, _ := strings.Cut(setCookie, ";")
	return v
}

func TestDecideRefresh(t *testing.T) {
	for _, mode := range []Mode{ModeOpaque, ModeVerified} {
		t.Run(string(mode), func(t *testing.T) {
			clock := &fixedClock{t: t0}
			e := NewEngine(modeSnapshot(t, mode, "web-1", "web-2", "web-3"), clock.now)
			first := e.Decide(Request{})
			cookie := cookieOf(t, first.SetCookie)
			sess, err := e.Snapshot().Codec.Verify(strings.TrimPrefix(cookie, "affinity="), clock.t)
			if err != nil || !sess.ExpiresAt.Equal(t0.Add(5*time.Minute)) {
				t.Fatalf("token exp %v (%v), want one refresh interval", sess.ExpiresAt, err)
			}
			// Past exp, within the absolute timeout: same session, same host, new token.
			clock.t = t0.Add(20 * time.Minute)
			d := e.Decide(Request{CookieHeaders: []string{cookie}})
			if d.Outcome != OutcomePinned || d.Reason != ReasonExpired || d.Hosts[0] != first.Hosts[0] || d.SetCookie == "" {
				t.Fatalf("refresh: %+v", d)
			}
			again, err := e.Snapshot().Codec.Verify(strings.TrimPrefix(cookieOf(t, d.SetCookie), "affinity="), clock.t)
			if err != nil || again.ID != sess.ID || !again.Start.Equal(t0) || !again.ExpiresAt.Equal(clock.t.Add(5*time.Minute)) {
				t.Fatalf("refreshed token %+v (%v)", again, err)
			}
			// Near the end, exp stops at the absolute timeout.
			clock.t = t0.Add(50 * time.Minute)
			d = e.Decide(Request{CookieHeaders: []string{cookieOf(t, d.SetCookie)}})
			clock.t = t0.Add(58 * time.Minute)
			d = e.Decide(Request{CookieHeaders: []string{cookieOf(t, d.SetCookie)}})
			last, _ := e.Snapshot().Codec.Verify(strings.TrimPrefix(cookieOf(t, d.SetCookie), "affinity="), clock.t)
			if !last.ExpiresAt.Equal(t0.Add(time.Hour)) {
				t.Fatalf("exp %v, want the absolute end", last.ExpiresAt)
			}
		})
	}
}

func TestDecideVerifiedMode(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := NewEngine(modeSnapshot(t, ModeVerified, "web-1", "web-2", "web-3"), clock.now)
	d := e.Decide(Request{})
	tok := strings.TrimPrefix(cookieOf(t, d.SetCookie), "affinity=")
	sess, _ := e.Snapshot().Codec.Verify(tok, clock.t)
	// h is what Envoy's override_host reads: primary,successor as ip:port.
	if want := strings.Join(d.Hosts, ","); sess.Host != want || !strings.HasPrefix(want, "127.0.0.") {
		t.Fatalf("h = %q, want %q", sess.Host, want)
	}
	// A valid token that reaches the service was not usable by Envoy: re-issued, same host.
	d2 := e.Decide(Request{CookieHeaders: []string{"affinity=" + tok}})
	if d2.Outcome != OutcomePinned || d2.Reason != ReasonUnverified || d2.Hosts[0] != d.Hosts[0] || d2.SetCookie == "" {
		t.Fatalf("unverified: %+v", d2)
	}
	// Its primary gone: re-bound to its successor, which the token already named second.
	var rest []string
	for _, n := range []string{"web-1", "web-2", "web-3"} {
		if "127.0.0."+strings.TrimPrefix(n, "web-")+":80" != d.Hosts[0] {
			rest = append(rest, n)
		}
	}
	e.Update(modeSnapshot(t, ModeVerified, rest...))
	d3 := e.Decide(Request{CookieHeaders: []string{"affinity=" + tok}})
	if d3.Outcome != OutcomeRebound || d3.Hosts[0] != d.Hosts[1] {
		t.Fatalf("host left: %+v, want primary %s", d3, d.Hosts[1])
	}
}

func TestDecideNativeMode(t *testing.T) {
	e := NewEngine(modeSnapshot(t, ModeNative, "web-1", "web-2"), (&fixedClock{t: t0}).now)
	// Cookies are Envoy's business: every request the service sees is placed, no cookie written.
	for _, c := range [][]string{nil, {"affinity=whatever"}} {
		d := e.Decide(Request{CookieHeaders: c})
		if d.Outcome != OutcomeNew || d.SetCookie != "" || len(d.Hosts) != 2 {
			t.Fatalf("native: %+v", d)
		}
	}
}

// drainingSnapshot has web-1..3 with web-2 draining until deadline.
func drainingSnapshot(t *testing.T, mode Mode, strict bool, deadline time.Time) *Snapshot {
	t.Helper()
	y := "keys: {env: K}\npools:\n  - mode: " + string(mode) +
		"\n    strict: " + map[bool]string{true: "true", false: "false"}[strict] +
		"\n    session: {refresh_interval: 5m, absolute_timeout: 1h}\n    hosts:\n" +
		"      - {name: web-1, address: '127.0.0.1:80'}\n" +
		"      - {name: web-2, address: '127.0.0.2:80', draining_until: " + deadline.UTC().Format(time.RFC3339) + "}\n" +
		"      - {name: web-3, address: '127.0.0.3:80'}\n"
	return mustBuild(t, y)
}

// sessionOn opens new sessions until one lands on host id (all hosts active).
func sessionOn(t *testing.T, e *Engine, id string) string {
	t.Helper()
	for range 1000 {
		if d := e.Decide(Request{}); d.HostID == id {
			return cookieHeader(d.SetCookie)
		}
	}
	t.Fatalf("no session landed on %s", id)
	return ""
}

func TestDecideDraining(t *testing.T) {
	for _, mode := range []Mode{ModeOpaque, ModeVerified} {
		t.Run(string(mode), func(t *testing.T) {
			clock := &fixedClock{t: t0}
			e := NewEngine(modeSnapshot(t, mode, "web-1", "web-2", "web-3"), clock.now)
			cookie := sessionOn(t, e, "web-2")
			deadline := t0.Add(2 * time.Minute)
			e.Update(drainingSnapshot(t, mode, false, deadline))

			// No new session goes to the draining host.
			for range 300 {
				if d := e.Decide(Request{}); d.HostID == "web-2" || strings.Contains(strings.Join(d.Hosts, ","), "127.0.0.2") {
					t.Fatalf("new session placed on or behind the draining host: %+v", d)
				}
			}
			// Its sessions stay until the deadline; a token issued now expires at it.
			clock.t = t0.Add(time.Minute)
			d := e.Decide(Request{CookieHeaders: []string{cookie}})
			if d.Outcome != OutcomePinned || d.HostID != "web-2" || strings.HasPrefix(d.Hosts[1], "127.0.0.2") {
				t.Fatalf("before the deadline: %+v", d)
			}
			if d.SetCookie != "" {
				tok, _ := e.Snapshot().Codec.Verify(strings.TrimPrefix(cookieHeader(d.SetCookie), "affinity="), clock.t)
				if !tok.ExpiresAt.Equal(deadline) {
					t.Fatalf("token on a draining host expires %v, want the deadline %v", tok.ExpiresAt, deadline)
				}
			}
			// After it, they move to their successor.
			clock.t = deadline
			d = e.Decide(Request{CookieHeaders: []string{cookie}})
			if d.Outcome != OutcomeRebound || d.Reason != ReasonDraining || d.HostID == "web-2" {
				t.Fatalf("after the deadline: %+v", d)
			}
		})
	}
}

func TestDecideStrict(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := NewEngine(modeSnapshot(t, ModeOpaque, "web-1", "web-2", "web-3"), clock.now)
	cookie := sessionOn(t, e, "web-2")
	other := sessionOn(t, e, "web-1")
	e.Update(drainingSnapshot(t, ModeOpaque, true, t0.Add(time.Minute)))
	tests := []struct {
		name    string
		at      time.Duration
		cookie  string
		outcome Outcome
		reason  Reason
	}{
		{"draining host before its deadline", 0, cookie, OutcomePinned, ReasonNone},
		{"draining host after its deadline", time.Minute, cookie, OutcomeRejected, ReasonDraining},
		{"other sessions are untouched", time.Minute, other, OutcomePinned, ReasonNone},
	}
	for _, tt := range tests {
		clock.t = t0.Add(tt.at)
		d := e.Decide(Request{CookieHeaders: []string{tt.cookie}})
		if d.Outcome != tt.outcome || d.Reason != tt.reason {
			t.Fatalf("%s: %+v", tt.name, d)
		}
		if d.Outcome == OutcomeRejected && (d.Status != 503 || d.Body != StrictBody || !strings.Contains(d.SetCookie, "affinity=; ") || !strings.HasSuffix(d.SetCookie, "Max-Age=0")) {
			t.Fatalf("%s: rejection %+v", tt.name, d)
		}
	}
	// A host removed from the config is gone too.
	e.Update(func() *Snapshot {
		cfg, _ := ParseConfig("t.yaml", []byte("keys: {env: K}\npools:\n  - mode: opaque\n    strict: true\n    hosts: [{name: web-1, address: '127.0.0.1:80'}]\n"))
		return cfg.Build(testKeyring(t))
	}())
	if d := e.Decide(Request{CookieHeaders: []string{cookie}}); d.Outcome != OutcomeRejected || d.Reason != ReasonHostLeft {
		t.Fatalf("host left, strict: %+v", d)
	}
}

func TestDecideIdleTimeout(t *testing.T) {
	// refresh 5m, idle 30m (the defaults in these tests' snapshot), absolute 1h
	tests := []struct {
		name    string
		idle    time.Duration // since the token was issued
		outcome Outcome
		reason  Reason
	}{
		{"refreshed within idle + refresh", 34 * time.Minute, OutcomePinned, ReasonExpired},
		{"idle longer", 36 * time.Minute, OutcomeNew, ReasonIdle},
	}
	for _, tt := range tests {
		clock := &fixedClock{t: t0}
		e := NewEngine(modeSnapshot(t, ModeOpaque, "web-1", "web-2"), clock.now)
		cookie := cookieHeader(e.Decide(Request{}).SetCookie)
		clock.t = t0.Add(tt.idle)
		if d := e.Decide(Request{CookieHeaders: []string{cookie}}); d.Outcome != tt.outcome || d.Reason != tt.reason {
			t.Errorf("%s: %+v", tt.name, d)
		}
	}
}

func TestPoolSelectionAndOverrideLength(t *testing.T) {
	cfg, err := ParseConfig("t.yaml", []byte("keys: {env: K}\npools:\n  - name: shop\n    mode: opaque\n    override_hosts: 3\n    hosts: [{address: '127.0.0.1:1'}, {address: '127.0.0.2:1'}, {address: '127.0.0.3:1'}, {address: '127.0.0.4:1'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg.Build(testKeyring(t)), (&fixedClock{t: t0}).now)
	tests := []struct {
		name    string
		req     Request
		outcome Outcome
	}{
		{"cluster named like the pool", Request{Cluster: "shop"}, OutcomeNew},
		{"pool named by Envoy's initial metadata wins over the cluster", Request{Pool: "shop", Cluster: "other"}, OutcomeNew},
		{"another cluster: a named pool does not take it", Request{Cluster: "other"}, OutcomePassThrough},
		{"an unknown pool name", Request{Pool: "nope", Cluster: "shop"}, OutcomePassThrough},
	}
	for _, tt := range tests {
		d := e.Decide(tt.req)
		if d.Outcome != tt.outcome {
			t.Errorf("%s: %+v", tt.name, d)
		}
		if d.Outcome == OutcomeNew && len(d.Hosts) != 3 {
			t.Errorf("%s: override list %v, want 3 hosts", tt.name, d.Hosts)
		}
	}
	if n := e.UnknownPoolRequests(); n != 2 {
		t.Errorf("unknown-pool requests counted %d, want 2", n)
	}
	pinned := e.Decide(Request{Cluster: "shop", CookieHeaders: []string{cookieHeader(e.Decide(Request{Cluster: "shop"}).SetCookie)}})
	if pinned.Outcome != OutcomePinned || len(pinned.Hosts) != 3 || pinned.Hosts[0] == pinned.Hosts[1] || pinned.Hosts[1] == pinned.Hosts[2] {
		t.Errorf("pinned override list %v", pinned.Hosts)
	}
}

func TestRebindToServedHost(t *testing.T) {
	for _, mode := range []Mode{ModeOpaque, ModeVerified} {
		e := NewEngine(modeSnapshot(t, mode, "web-1", "web-2", "web-3"), (&fixedClock{t: t0}).now)
		d := e.Decide(Request{})
		c, ok := e.rebind(d.Pool, d.Session, d.Hosts[1])
		if !ok {
			t.Fatalf("%s: not re-bound", mode)
		}
		again := e.Decide(Request{CookieHeaders: []string{cookieHeader(c)}})
		if again.Hosts[0] != d.Hosts[1] || again.Outcome != OutcomePinned {
			t.Fatalf("%s: after the re-bind %+v, want primary %s", mode, again, d.Hosts[1])
		}
		if _, ok := e.rebind(d.Pool, d.Session, "10.9.9.9:80"); ok {
			t.Fatalf("%s: re-bound to a host outside the pool", mode)
		}
	}
}
