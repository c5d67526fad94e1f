package affinity

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// mapHeaders is a Headers over a map.
type mapHeaders map[string]string

func (m mapHeaders) Get(name string) (string, bool) { v, ok := m[name]; return v, ok }

func sourcesSnapshot(t testing.TB, sources string, hosts ...string) *Snapshot {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "keys: {env: K}\npools:\n  - mode: opaque\n    key_sources: %s\n    upstream_headers: {rebound: X-Session-Rebound, successor: x-session-successor}\n    hosts:\n", sources)
	for _, n := range hosts {
		fmt.Fprintf(&b, "      - {name: %s, address: '127.0.0.%s:80'}\n", n, strings.TrimPrefix(n, "web-"))
	}
	return mustBuild(t, b.String())
}

func TestKeySources(t *testing.T) {
	const sources = "[{type: header, name: X-Session-Id}, {type: query, name: sid}, {type: app_cookie, name: JSESSIONID}, {type: cookie}, {type: client_address, trusted_hops: 1}]"
	tests := []struct {
		name    string
		req     Request
		outcome Outcome
		reason  Reason
		cookie  bool // a session cookie is issued
	}{
		{"header key", Request{Headers: mapHeaders{"x-session-id": "user-42"}}, OutcomeNew, ReasonNewKey, false},
		{"query key", Request{Headers: mapHeaders{":path": "/cart?sid=abc&x=1"}}, OutcomeNew, ReasonNewKey, false},
		{"unknown app cookie falls through to our cookie source", Request{CookieHeaders: []string{"JSESSIONID=zzz"}}, OutcomeNew, ReasonNoCookie, true},
		{"no key at all: a cookie session", Request{}, OutcomeNew, ReasonNoCookie, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(sourcesSnapshot(t, sources, "web-1", "web-2", "web-3"), (&fixedClock{t: t0}).now)
			d := e.Decide(tt.req)
			if d.Outcome != tt.outcome || d.Reason != tt.reason || (d.SetCookie != "") != tt.cookie || len(d.Hosts) != 2 {
				t.Fatalf("%+v", d)
			}
			// The same key again: the same host.
			if again := e.Decide(tt.req); !tt.cookie && (again.Outcome != OutcomePinned || again.HostID != d.HostID) {
				t.Fatalf("second request: %+v, first on %s", again, d.HostID)
			}
		})
	}
}

func TestHeaderKeyIsRemembered(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := NewEngine(sourcesSnapshot(t, "[{type: header, name: x-session-id}]", "web-1", "web-2", "web-3"), clock.now)
	first := map[string]string{}
	for i := range 60 {
		key := fmt.Sprintf("user-%d", i)
		first[key] = e.Decide(Request{Headers: mapHeaders{"x-session-id": key}}).HostID
	}
	// Hosts added: every known key stays where it was.
	e.Update(sourcesSnapshot(t, "[{type: header, name: x-session-id}]", "web-1", "web-2", "web-3", "web-4", "web-5"))
	for key, host := range first {
		if d := e.Decide(Request{Headers: mapHeaders{"x-session-id": key}}); d.HostID != host || d.Outcome != OutcomePinned {
			t.Fatalf("%s moved from %s: %+v", key, host, d)
		}
	}
	// A key whose host left moves to its successor, and says so upstream.
	e.Update(sourcesSnapshot(t, "[{type: header, name: x-session-id}]", "web-1", "web-3", "web-4", "web-5"))
	for key, host := range first {
		d := e.Decide(Request{Headers: mapHeaders{"x-session-id": key}})
		if host != "web-2" {
			continue
		}
		if d.Outcome != OutcomeRebound || d.Reason != ReasonHostLeft || d.HostID == "web-2" {
			t.Fatalf("%s of the removed host: %+v", key, d)
		}
		if fmt.Sprint(d.SetHeaders[0]) != "[x-session-rebound host-left]" || d.SetHeaders[1][0] != "x-session-successor" {
			t.Fatalf("upstream headers %v", d.SetHeaders)
		}
		if fmt.Sprint(d.RemoveHeaders) != "[x-session-rebound x-session-successor]" {
			t.Fatalf("client copies not removed: %v", d.RemoveHeaders)
		}
	}
	// Keys idle past the idle timeout are forgotten and placed anew.
	clock.t = t0.Add(31 * time.Minute)
	if d := e.Decide(Request{Headers: mapHeaders{"x-session-id": "user-0"}}); d.Outcome != OutcomeNew {
		t.Fatalf("idle key: %+v", d)
	}
}

func TestLearnedAppCookie(t *testing.T) {
	e := NewEngine(sourcesSnapshot(t, "[{type: app_cookie, name: JSESSIONID}, {type: cookie}]", "web-1", "web-2", "web-3"), (&fixedClock{t: t0}).now)
	d := e.Decide(Request{})
	if d.LearnCookie != "JSESSIONID" {
		t.Fatalf("the response phase is not asked to learn: %+v", d)
	}
	if !e.learnKey(d.Pool, SourceAppCookie, "abc123", "127.0.0.3:80") {
		t.Fatal("not learned")
	}
	if e.learnKey(d.Pool, SourceAppCookie, "x", "10.9.9.9:80") {
		t.Fatal("learned a host outside the pool")
	}
	got := e.Decide(Request{CookieHeaders: []string{"JSESSIONID=abc123"}})
	if got.Outcome != OutcomePinned || got.HostID != "web-3" || got.LearnCookie != "" {
		t.Fatalf("learned cookie: %+v", got)
	}
}

// TestUpstreamHeader: a session header the upstream starts (MCP's
// Mcp-Session-Id) is learned from the response that sets it, for the host
// that served; its requests go there; the DELETE that ends the session
// still goes there and makes the service forget it; an unknown value, or a
// request without one, is placed by the service, which learns from the
// response.
func TestUpstreamHeader(t *testing.T) {
	e := NewEngine(sourcesSnapshot(t, "[{type: upstream_header, name: mcp-session-id}]", "web-1", "web-2", "web-3"), (&fixedClock{t: t0}).now)
	steps := []struct {
		name    string
		req     Request
		learn   string // a response of the request sets the header to this, served by web-3
		outcome Outcome
		host    string // "" = any
		asks    bool   // the response phase is asked to learn
	}{
		{name: "initialize: no header yet", req: Request{Headers: mapHeaders{":method": "POST"}}, learn: "s-1", outcome: OutcomeNew, asks: true},
		{name: "the learned session", req: Request{Headers: mapHeaders{":method": "POST", "mcp-session-id": "s-1"}}, outcome: OutcomePinned, host: "web-3"},
		{name: "its GET stream", req: Request{Headers: mapHeaders{":method": "GET", "mcp-session-id": "s-1"}}, outcome: OutcomePinned, host: "web-3"},
		{name: "a value no host set", req: Request{Headers: mapHeaders{":method": "POST", "mcp-session-id": "forged"}}, outcome: OutcomeNew, asks: true},
		{name: "the DELETE that ends it, on its host", req: Request{Headers: mapHeaders{":method": "DELETE", "mcp-session-id": "s-1"}}, outcome: OutcomePinned, host: "web-3"},
		{name: "then forgotten", req: Request{Headers: mapHeaders{":method": "POST", "mcp-session-id": "s-1"}}, outcome: OutcomeNew, asks: true},
	}
	for _, st := range steps {
		d := e.Decide(st.req)
		if d.Outcome != st.outcome || (st.host != "" && d.HostID != st.host) || (d.LearnHeader != "") != st.asks || len(d.Hosts) == 0 {
			t.Fatalf("%s: %+v", st.name, d)
		}
		if d.WantsResponse() != st.asks {
			t.Fatalf("%s: wants the response %v", st.name, d.WantsResponse())
		}
		if st.learn != "" {
			e.Respond(&d, Upstream{Served: "127.0.0.3:80", Headers: mapHeaders{"mcp-session-id": st.learn}})
		}
	}
}

func TestClientAddress(t *testing.T) {
	tests := []struct {
		hops        int
		source, xff string
		want        string
	}{
		// x-forwarded-for as Envoy forwards it (use_remote_address): the
		// address of the connection (192.0.2.7, a trusted proxy) appended.
		{0, "192.0.2.7:5555", "198.51.100.1, 192.0.2.7", "192.0.2.7"},
		{1, "192.0.2.7:5555", "198.51.100.1, 203.0.113.9, 192.0.2.7", "203.0.113.9"},
		{2, "192.0.2.7:5555", "198.51.100.1, 203.0.113.9, 192.0.2.7", "198.51.100.1"},
		{3, "192.0.2.7:5555", "198.51.100.1, 203.0.113.9, 192.0.2.7", "192.0.2.7"},
		{1, "[::ffff:192.0.2.7]:80", "", "192.0.2.7"},
	}
	for _, tt := range tests {
		req := Request{SourceAddress: tt.source, Headers: mapHeaders{"x-forwarded-for": tt.xff}}
		if got := clientAddress(&req, tt.hops).String(); got != tt.want {
			t.Errorf("hops %d, source %s, xff %q: %s, want %s", tt.hops, tt.source, tt.xff, got, tt.want)
		}
	}
}

func TestKeySourceConfigErrors(t *testing.T) {
	tests := []struct{ sources, want string }{
		{"[{type: carrier-pigeon}]", `"carrier-pigeon" is not one of`},
		{"[{type: header}]", "header needs a valid name"},
		{"[{type: query, name: a, trusted_hops: 2}]", "only client_address takes trusted_hops"},
		{"[{type: app_cookie, name: affinity}]", "is the session cookie itself"},
		{"[{type: cookie}, {type: cookie}]", "listed twice"},
		{"[{type: header, name: x-session-id, envelope: signed}]", "only upstream_header takes an envelope"},
		{"[{type: upstream_header, name: mcp-session-id, envelope: sealed}]", "only upstream_header takes an envelope"},
	}
	for _, tt := range tests {
		_, err := ParseConfig("t.yaml", []byte("keys: {env: K}\npools:\n  - key_sources: "+tt.sources+"\n    hosts: [{address: '127.0.0.1:1'}]\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.sources, err, tt.want)
		}
	}
	_, err := ParseConfig("t.yaml", []byte("keys: {env: K}\npools:\n  - mode: native\n    key_sources: [{type: header, name: x}]\n    hosts: [{address: '127.0.0.1:1'}]\n"))
	if err == nil || !strings.Contains(err.Error(), "native mode") {
		t.Errorf("native with a header source: %v", err)
	}
}

// TestNoKeyRemovesClientHeaders: a request no source has a key for is left
// to Envoy's load balancer, and the client's copies of the headers the
// service sets for the application are still removed.
func TestNoKeyRemovesClientHeaders(t *testing.T) {
	e := NewEngine(sourcesSnapshot(t, "[{type: header, name: x-session-id}]", "web-1", "web-2"), (&fixedClock{t: t0}).now)
	d := e.Decide(Request{})
	if d.Outcome != OutcomePassThrough || fmt.Sprint(d.RemoveHeaders) != "[x-session-rebound x-session-successor]" {
		t.Fatalf("%+v", d)
	}
}

// FuzzKeySources: whatever a client puts in the header, the query, the
// forwarded-for list, the connection's address or the application's
// cookie, a decision never panics, keys a host of the pool, and the same
// request decides the same way twice.
func FuzzKeySources(f *testing.F) {
	f.Add("device-1", "/?sid=a&x=1", "198.51.100.1, 192.0.2.7", "192.0.2.7:5555", "JSESSIONID=abc; affinity=x")
	f.Add("", "/%zz?sid=%", ",,,", "[::1]:80", `JSESSIONID="`)
	f.Add("\x00\xff", "?sid=;sid=b", "not-an-ip", "garbage", "=;=")
	snap := mustBuild(f, "keys: {env: K}\npools:\n  - mode: verified\n    key_sources:\n"+
		"      - {type: header, name: x-session-id}\n      - {type: query, name: sid}\n      - {type: app_cookie, name: JSESSIONID}\n"+
		"      - {type: client_address, trusted_hops: 1}\n    hosts: [{name: a, address: '127.0.0.1:1'}, {name: b, address: '127.0.0.2:1'}]\n")
	f.Fuzz(func(t *testing.T, header, path, xff, source, cookie string) {
		e := NewEngine(snap, func() time.Time { return t0 })
		req := Request{Headers: mapHeaders{"x-session-id": header, ":path": path, "x-forwarded-for": xff},
			SourceAddress: source, CookieHeaders: []string{cookie}}
		first := e.Decide(req)
		if first.HostID != "" && first.HostID != "a" && first.HostID != "b" {
			t.Fatalf("host %q is not in the pool", first.HostID)
		}
		if again := e.Decide(req); again.HostID != first.HostID {
			t.Fatalf("the same request went to %q, then %q", first.HostID, again.HostID)
		}
	})
}

// BenchmarkDecideKey is the decision for a request of a known key, per key
// source: the source reads the key, the store remembers its host.
func BenchmarkDecideKey(b *testing.B) {
	tests := []struct {
		name, sources string
		req           Request
	}{
		{"header", "[{type: header, name: x-session-id}]", Request{Headers: mapHeaders{"x-session-id": "user-42"}}},
		{"query", "[{type: query, name: sid}]", Request{Headers: mapHeaders{":path": "/cart?sid=abc"}}},
		{"client_address", "[{type: client_address}]", Request{SourceAddress: "192.0.2.7:5555"}},
		{"app_cookie", "[{type: app_cookie, name: JSESSIONID}, {type: cookie}]", Request{CookieHeaders: []string{"JSESSIONID=abc123"}}},
	}
	for _, tt := range tests {
		e := NewEngine(sourcesSnapshot(b, tt.sources, "web-1", "web-2", "web-3"), func() time.Time { return t0 })
		if tt.name == "app_cookie" {
			d := e.Decide(Request{})
			e.Respond(&d, Upstream{Served: "127.0.0.2:80", SetCookies: []string{"JSESSIONID=abc123; Path=/"}})
		}
		e.Decide(tt.req)
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := e.Decide(tt.req); d.Outcome != OutcomePinned {
					b.Fatal(d)
				}
			}
		})
	}
}
