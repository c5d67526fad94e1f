package affinity

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// TestRespond: what a response means is judged by the engine. The pool has
// passive health (two 5xx answers mark a host down) and learns JSESSIONID.
func TestRespond(t *testing.T) {
	const yaml = "keys: {env: K}\npools:\n  - mode: opaque\n    key_sources: [{type: app_cookie, name: JSESSIONID}, {type: cookie}]\n" +
		"    health: {passive: {backoff: 10s, status_5xx: 2}}\n" +
		"    hosts: [{name: web-1, address: '127.0.0.1:80'}, {name: web-2, address: '127.0.0.2:80'}, {name: web-3, address: '127.0.0.3:80'}]\n"
	type want struct {
		cookieOn string // the host the reply's cookie names ("": none)
		rebound  Reason
		downHost string // a host no new session reaches afterwards
		learned  bool   // JSESSIONID=abc now routes to the host that served
	}
	tests := []struct {
		name string
		up   func(d Decision) Upstream
		want func(d Decision) want
	}{
		{"served by the primary: the cookie as decided",
			func(d Decision) Upstream { return Upstream{Served: d.Hosts[0], Status: 200} },
			func(d Decision) want { return want{cookieOn: d.HostID} }},
		{"Envoy did not say who served: nothing judged",
			func(d Decision) Upstream { return Upstream{Status: 503, SetCookies: []string{"JSESSIONID=abc"}} },
			func(d Decision) want { return want{cookieOn: d.HostID} }},
		{"served by the successor after a retry: re-bound there, the primary down",
			func(d Decision) Upstream { return Upstream{Served: d.Hosts[1], Status: 200} },
			func(d Decision) want {
				return want{cookieOn: hostAt(t, d.Hosts[1]), rebound: ReasonServedElsewhere, downHost: d.HostID}
			}},
		{"served by a host outside the pool: the primary down, no re-bind",
			func(d Decision) Upstream { return Upstream{Served: "10.9.9.9:80", Status: 200} },
			func(d Decision) want { return want{cookieOn: d.HostID, downHost: d.HostID} }},
		{"the application sets its session cookie: learned for the host that served",
			func(d Decision) Upstream {
				return Upstream{Served: d.Hosts[0], Status: 200, SetCookies: []string{"other=1; Path=/", "JSESSIONID=abc; Path=/; HttpOnly"}}
			},
			func(d Decision) want { return want{cookieOn: d.HostID, learned: true} }},
		{"one 5xx answer: counted, not yet down",
			func(d Decision) Upstream { return Upstream{Served: d.Hosts[0], Status: 503} },
			func(d Decision) want { return want{cookieOn: d.HostID} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(mustBuild(t, yaml), (&fixedClock{t: t0}).now)
			d := e.Decide(Request{})
			if !d.WantsResponse() {
				t.Fatalf("a new session that learns a cookie does not want its response: %+v", d)
			}
			w := tt.want(d)
			r := e.Respond(&d, tt.up(d))
			if got := cookieHost(t, e, r.SetCookie); got != w.cookieOn || r.Rebound != w.rebound {
				t.Fatalf("reply names %q (re-bound %q), want %q (%q)", got, r.Rebound, w.cookieOn, w.rebound)
			}
			if n := placedOn(e, 100)[w.downHost]; w.downHost != "" && n != 0 {
				t.Fatalf("%s took %d new sessions after it was marked down", w.downHost, n)
			}
			if w.downHost == "" && len(placedOn(e, 100)) != 3 {
				t.Fatal("a host is down")
			}
			got := e.Decide(Request{CookieHeaders: []string{"JSESSIONID=abc"}})
			if learned := got.Outcome == OutcomePinned && got.Hosts[0] == d.Hosts[0]; learned != w.learned {
				t.Fatalf("JSESSIONID=abc learned = %v, want %v: %+v", learned, w.learned, got)
			}
		})
	}
}

// TestRespond5xxMarksDown: the second 5xx answer within the window takes
// the host out.
func TestRespond5xxMarksDown(t *testing.T) {
	e := healthEngine(t, &fixedClock{t: t0})
	d := e.Decide(Request{})
	for i := range 3 {
		e.Respond(&d, Upstream{Served: d.Hosts[0], Status: 500 + i})
	}
	if n := placedOn(e, 200)[d.HostID]; n != 0 {
		t.Fatalf("%s took %d new sessions after three 5xx answers", d.HostID, n)
	}
}

// hostAt is the test pools' host ID of an address 127.0.0.N:80.
func hostAt(t *testing.T, addr string) string {
	t.Helper()
	return "web-" + addr[len("127.0.0."):len(addr)-len(":80")]
}

// cookieHost is the host ID an opaque-mode Set-Cookie value names ("" for
// none).
func cookieHost(t *testing.T, e *Engine, setCookie string) string {
	t.Helper()
	if setCookie == "" {
		return ""
	}
	token, _ := CookieValue(cookieHeader(setCookie), DefaultCookieName)
	sess, err := e.Snapshot().Codec.Verify(token, e.Now())
	if err != nil {
		t.Fatalf("the reply's cookie: %v", err)
	}
	return sess.Host
}

// TestRespondFailedOver: a response Envoy marked as served elsewhere than on
// the primary of a session it routed by itself (no decision) re-binds the
// session to the host that served it, unless the pool fails back.
func TestRespondFailedOver(t *testing.T) {
	pool := func(mode Mode, extra string) string {
		return "keys: {env: K}\npools:\n  - mode: " + string(mode) + "\n" + extra +
			"    health: {passive: {backoff: 10s}}\n" +
			"    hosts: [{name: web-1, address: '127.0.0.1:80'}, {name: web-2, address: '127.0.0.2:80'}, {name: web-3, address: '127.0.0.3:80'}]\n"
	}
	tests := []struct {
		name, yaml string
		served     func(d Decision) string // the host that served
		cookie     func(d Decision) string // the request's Cookie header
		reboundTo  func(d Decision) string // the host the reply's cookie names ("": no cookie)
		down       bool                    // the primary counts as failed
	}{
		{name: "verified: re-bound to the successor that served", yaml: pool(ModeVerified, ""),
			served:    func(d Decision) string { return d.Hosts[1] },
			reboundTo: func(d Decision) string { return d.Hosts[1] }, down: true},
		{name: "opaque: re-bound to the successor that served", yaml: pool(ModeOpaque, ""),
			served:    func(d Decision) string { return d.Hosts[1] },
			reboundTo: func(d Decision) string { return d.Hosts[1] }, down: true},
		{name: "served by the primary after all: nothing to do", yaml: pool(ModeVerified, ""),
			served: func(d Decision) string { return d.Hosts[0] }},
		{name: "failback: the token stays, the primary still counts as failed", yaml: pool(ModeVerified, "    failback: true\n"),
			served: func(d Decision) string { return d.Hosts[1] }, down: true},
		{name: "served outside the pool: no re-bind", yaml: pool(ModeOpaque, ""),
			served: func(Decision) string { return "10.9.9.9:80" }, down: true},
		{name: "a forged cookie: nothing", yaml: pool(ModeVerified, ""),
			served: func(d Decision) string { return d.Hosts[1] },
			cookie: func(Decision) string { return "affinity=eyJhbGciOiJub25lIn0.e30." }},
		{name: "no cookie: nothing", yaml: pool(ModeOpaque, ""),
			served: func(d Decision) string { return d.Hosts[1] },
			cookie: func(Decision) string { return "other=1" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(mustBuild(t, tt.yaml), (&fixedClock{t: t0}).now)
			d := e.Decide(Request{})
			cookie := cookieHeader(d.SetCookie)
			if tt.cookie != nil {
				cookie = tt.cookie(d)
			}
			r := e.Respond(nil, Upstream{Served: tt.served(d), Status: 200, RequestCookies: []string{"a=1; " + cookie}, Marked: true})
			want := ""
			if tt.reboundTo != nil {
				want = tt.reboundTo(d)
			}
			got := ""
			if r.SetCookie != "" {
				again := e.Decide(Request{CookieHeaders: []string{cookieHeader(r.SetCookie)}})
				if again.Outcome != OutcomePinned {
					t.Fatalf("the re-bound cookie does not pin: %+v", again)
				}
				got = again.Hosts[0]
				if r.Rebound != ReasonServedElsewhere || r.Pool != DefaultPoolName {
					t.Fatalf("reply %+v", r)
				}
			}
			if got != want {
				t.Fatalf("re-bound to %q, want %q", got, want)
			}
			if n := placedOn(e, 100)[d.HostID]; (n == 0) != tt.down {
				t.Fatalf("%s took %d new sessions; marked down = %v", d.HostID, n, tt.down)
			}
		})
	}
}

// TestRespondTokenWithoutPrimary: a verified token without the p claim
// (issued before tokens named their primary) makes Envoy send every response
// of its session: it is re-issued with p, on the same host; a token with p
// served by its primary is left alone.
func TestRespondTokenWithoutPrimary(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := NewEngine(modeSnapshot(t, ModeVerified, "web-1", "web-2", "web-3"), clock.now)
	d := e.Decide(Request{})
	token, _ := CookieValue(cookieHeader(d.SetCookie), DefaultCookieName)
	sess, err := e.Snapshot().Codec.Verify(token, t0)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.Respond(nil, Upstream{Served: d.Hosts[0], RequestCookies: []string{"affinity=" + token}, Marked: true}); !reflect.DeepEqual(r, Reply{}) {
		t.Fatalf("a token with p: %+v", r)
	}
	sess.Primary = "" // as issued by an earlier version
	old, err := e.Snapshot().Codec.Sign(sess, t0)
	if err != nil {
		t.Fatal(err)
	}
	// Envoy's stateful_session marks every response of such a token.
	r := e.Respond(nil, Upstream{Served: d.Hosts[0], RequestCookies: []string{"affinity=" + old}, Marked: true})
	fresh, _ := CookieValue(cookieHeader(r.SetCookie), DefaultCookieName)
	got, err := e.Snapshot().Codec.Verify(fresh, t0)
	if err != nil || r.Rebound != ReasonNone {
		t.Fatalf("re-issued %+v: %v", r, err)
	}
	if got.ID != sess.ID || got.Host != sess.Host || got.Primary != base64.StdEncoding.EncodeToString([]byte(d.Hosts[0])) {
		t.Fatalf("re-issued %+v, want session %s on %s with p", got, sess.ID, sess.Host)
	}
}

// TestVerifiedTokenNamesItsPrimary: a verified token's p claim is base64 of
// the primary's ip:port (Envoy's header-based stateful_session reads it);
// opaque tokens carry no address.
func TestVerifiedTokenNamesItsPrimary(t *testing.T) {
	for _, mode := range []Mode{ModeVerified, ModeOpaque} {
		e := NewEngine(modeSnapshot(t, mode, "web-1", "web-2", "web-3"), (&fixedClock{t: t0}).now)
		d := e.Decide(Request{})
		token, _ := CookieValue(cookieHeader(d.SetCookie), DefaultCookieName)
		sess, err := e.Snapshot().Codec.Verify(token, t0)
		if err != nil {
			t.Fatal(err)
		}
		want := ""
		if mode == ModeVerified {
			want = base64.StdEncoding.EncodeToString([]byte(d.Hosts[0]))
		}
		if sess.Primary != want {
			t.Fatalf("%s: p = %q, want %q", mode, sess.Primary, want)
		}
	}
}

// TestRespondFailedOverKey: a keyed session (header, query, client address
// or learned application cookie) whose request another host served is
// re-bound to that host, from the response its decision asked for or from
// a marked response carrying its key back; later requests go there, also
// once the old host is back to health. Failback keeps the binding; a host
// outside the pool, or the primary itself, re-binds nothing.
func TestRespondFailedOverKey(t *testing.T) {
	pool := func(sources, extra string) string {
		return "keys: {env: K}\npools:\n  - mode: opaque\n" + extra +
			"    key_sources: " + sources + "\n" +
			"    health: {passive: {backoff: 10s}}\n" +
			"    hosts: [{name: web-1, address: '127.0.0.1:80'}, {name: web-2, address: '127.0.0.2:80'}, {name: web-3, address: '127.0.0.3:80'}]\n"
	}
	header := func(key string) Request { return Request{Headers: mapHeaders{"x-session-id": key}} }
	tests := []struct {
		name, yaml string
		request    func(key string) Request
		// learn first: the key is an application cookie its host sets.
		learn bool
		// withDecision: the response comes to the request's own decision
		// (Respond(d, up)) rather than marked, with the key in metadata.
		withDecision bool
		served       func(d Decision) string
		reboundTo    func(d Decision) string // "" for none: the key stays on its primary
		down         bool
	}{
		{name: "header: re-bound to the successor that served", yaml: pool("[{type: header, name: x-session-id}]", ""), request: header,
			served: func(d Decision) string { return d.Hosts[1] }, reboundTo: func(d Decision) string { return d.Hosts[1] }, down: true},
		{name: "header, the decision's own response", yaml: pool("[{type: header, name: x-session-id}]", ""), request: header, withDecision: true,
			served: func(d Decision) string { return d.Hosts[1] }, reboundTo: func(d Decision) string { return d.Hosts[1] }, down: true},
		{name: "query", yaml: pool("[{type: query, name: sid}]", ""),
			request: func(key string) Request { return Request{Headers: mapHeaders{":path": "/cart?sid=" + key}} },
			served:  func(d Decision) string { return d.Hosts[1] }, reboundTo: func(d Decision) string { return d.Hosts[1] }, down: true},
		{name: "client address", yaml: pool("[{type: client_address}]", ""),
			request: func(key string) Request {
				sum := 0
				for _, c := range key {
					sum += int(c)
				}
				return Request{SourceAddress: fmt.Sprintf("192.0.2.%d:4321", sum%250+1)}
			},
			served: func(d Decision) string { return d.Hosts[1] }, reboundTo: func(d Decision) string { return d.Hosts[1] }, down: true},
		{name: "learned application cookie", yaml: pool("[{type: app_cookie, name: app_session}]", ""), learn: true,
			request: func(key string) Request { return Request{CookieHeaders: []string{"app_session=" + key}} },
			served:  func(d Decision) string { return d.Hosts[1] }, reboundTo: func(d Decision) string { return d.Hosts[1] }, down: true},
		{name: "failback: the key keeps its host, which still counts as failed", yaml: pool("[{type: header, name: x-session-id}]", "    failback: true\n"), request: header,
			served: func(d Decision) string { return d.Hosts[1] }, down: true},
		{name: "served by the primary after all: nothing to do", yaml: pool("[{type: header, name: x-session-id}]", ""), request: header,
			served: func(d Decision) string { return d.Hosts[0] }},
		{name: "served outside the pool: no re-bind", yaml: pool("[{type: header, name: x-session-id}]", ""), request: header,
			served: func(Decision) string { return "10.9.9.9:80" }, down: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(mustBuild(t, tt.yaml), (&fixedClock{t: t0}).now)
			key := "user-42"
			if tt.learn {
				// The first request has no key: placed, and its response
				// sets the application's cookie on the host that served.
				first := e.Decide(Request{})
				e.Respond(&first, Upstream{Served: first.Hosts[0], Status: 200, SetCookies: []string{"app_session=" + key + "; Path=/"}})
			}
			d := e.Decide(tt.request(key))
			if d.Key == "" || len(d.Hosts) < 2 {
				t.Fatalf("decision %+v: no key or no successor", d)
			}
			up := Upstream{Served: tt.served(d), Status: 200}
			var r Reply
			if tt.withDecision {
				r = e.Respond(&d, up)
			} else {
				up.Marked, up.Key, up.Primary = true, d.Key, d.Hosts[0]
				r = e.Respond(nil, up)
			}
			want := d.Hosts[0]
			if tt.reboundTo != nil {
				want = tt.reboundTo(d)
				if r.Rebound != ReasonServedElsewhere || r.Pool != DefaultPoolName {
					t.Fatalf("reply %+v, want a re-bind", r)
				}
			} else if r.Rebound != ReasonNone {
				t.Fatalf("reply %+v, want none", r)
			}
			if tt.down {
				// New keys avoid the primary while passive health holds it.
				for i := range 100 {
					if n := e.Decide(tt.request(fmt.Sprint("new-", i))); n.HostID == d.HostID && !tt.learn {
						t.Fatalf("a new key went to %s, which failed", d.HostID)
					}
				}
			}
			// Later requests go where it was re-bound, also once passive
			// health lets the old primary back.
			e.now = (&fixedClock{t: t0.Add(time.Minute)}).now
			again := e.Decide(tt.request(key))
			if again.Outcome != OutcomePinned || again.Hosts[0] != want {
				t.Fatalf("later: %v on %v, want pinned on %s", again.Outcome, again.Hosts, want)
			}
		})
	}
}
