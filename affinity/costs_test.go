package affinity

import (
	"strings"
	"testing"
	"time"
)

// TestCostsAreTheDecisions: for each source of pools of each mode, the
// messages Costs states are those the engine's decisions take (one for the
// request, one more when the decision asks for the response), for a new
// session, an established one and a refresh; where Costs says Envoy routes
// established sessions alone, it names the mode and sources that allow it.
func TestCostsAreTheDecisions(t *testing.T) {
	const served = "127.0.0.1:80"
	tests := []struct {
		mode, sources string
		want          []SourceCost
	}{
		{"verified", "[{type: cookie}]", []SourceCost{{Type: SourceCookie, Name: "affinity", New: 2, Refresh: 2, EnvoyAlone: true}}},
		{"opaque", "[{type: cookie}]", []SourceCost{{Type: SourceCookie, Name: "affinity", New: 2, Known: 1, Refresh: 2}}},
		{"native", "[{type: cookie}]", []SourceCost{{Type: SourceCookie, Name: "affinity", New: 1, EnvoyAlone: true}}},
		{"verified", "[{type: header, name: X-Session-Id}]", []SourceCost{{Type: SourceHeader, Name: "x-session-id", New: 1, Known: 1}}},
		{"opaque", "[{type: header, name: X-Session-Id}, {type: query, name: sid}, {type: client_address}]", []SourceCost{
			{Type: SourceHeader, Name: "x-session-id", New: 1, Known: 1},
			{Type: SourceQuery, Name: "sid", New: 1, Known: 1},
			{Type: SourceClientAddress, New: 1, Known: 1}}},
		{"verified", "[{type: header, name: x-session-id}, {type: cookie}]", []SourceCost{
			{Type: SourceHeader, Name: "x-session-id", New: 1, Known: 1},
			{Type: SourceCookie, Name: "affinity", New: 2, Refresh: 2, EnvoyAlone: true}}},
		// A learned cookie makes every other decision ask for the response.
		{"opaque", "[{type: header, name: x-session-id}, {type: app_cookie, name: JSESSIONID}, {type: cookie}]", []SourceCost{
			{Type: SourceHeader, Name: "x-session-id", New: 2, Known: 2},
			{Type: SourceAppCookie, Name: "JSESSIONID", New: 2, Known: 1},
			{Type: SourceCookie, Name: "affinity", New: 2, Known: 2, Refresh: 2}}},
		{"verified", "[{type: upstream_header, name: Mcp-Session-Id}]", []SourceCost{{Type: SourceUpstreamHeader, Name: "mcp-session-id", New: 2, Known: 1}}},
		{"verified", "[{type: upstream_header, name: Mcp-Session-Id, envelope: signed}]", []SourceCost{
			{Type: SourceUpstreamHeader, Name: "mcp-session-id", Envelope: true, New: 2, EnvoyAlone: true}}},
		{"opaque", "[{type: upstream_header, name: Mcp-Session-Id, envelope: signed}]", []SourceCost{
			{Type: SourceUpstreamHeader, Name: "mcp-session-id", Envelope: true, New: 2, Known: 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.mode+" "+tt.sources, func(t *testing.T) {
			clock := &fixedClock{t: time.Unix(1_700_000_000, 0)}
			snap := mustBuild(t, "keys: {env: K}\npools:\n  - mode: "+tt.mode+"\n    key_sources: "+tt.sources+
				"\n    session: {refresh_interval: 1m}\n    hosts: [{name: web-1, address: '"+served+"'}]\n")
			p := snap.Pools[0]
			got := p.Costs()
			if len(got) != len(tt.want) {
				t.Fatalf("costs %+v, want %+v", got, tt.want)
			}
			for i, c := range got {
				if c != tt.want[i] {
					t.Errorf("source %d: %+v, want %+v", i, c, tt.want[i])
				}
			}
			e := NewEngine(snap, clock.now)
			messages := func(d Decision) int {
				if d.WantsResponse() && p.Mode != ModeNative {
					return 2
				}
				return 1
			}
			for i, c := range got {
				ks := p.KeySources[i]
				// A request carrying only this source's key (value v).
				req := func(v string) Request {
					switch ks.Type {
					case SourceCookie, SourceAppCookie:
						return Request{CookieHeaders: []string{ks.Name + "=" + v}, SourceAddress: "10.9.9.9:1"}
					case SourceQuery:
						return Request{Headers: mapHeaders{":path": "/?" + ks.Name + "=" + v}, SourceAddress: "10.9.9.9:1"}
					case SourceClientAddress:
						return Request{SourceAddress: v + ":1"}
					}
					return Request{Headers: mapHeaders{ks.Name: v}, SourceAddress: "10.9.9.9:1"}
				}
				first := req("10.0.0.7")
				if ks.Type == SourceCookie || ks.traits.binding == bindLearned {
					first = Request{SourceAddress: "10.9.9.9:1"} // nothing yet
				}
				d := e.Decide(first)
				if n := messages(d); n != c.New {
					t.Errorf("%s: a new session took %d messages, Costs says %d", ks.Type, n, c.New)
				}
				if c.EnvoyAlone && p.Mode == ModeNative {
					if c.Known != 0 || c.Refresh != 0 {
						t.Errorf("native: %+v", c)
					}
					continue // established sessions carry Envoy's cookie, not ours
				}
				reply := e.Respond(&d, Upstream{Served: served, SetCookies: []string{"JSESSIONID=app-1"}, Headers: mapHeaders{"mcp-session-id": "mcp-1"}})
				known := req("10.0.0.7")
				switch {
				case ks.Type == SourceCookie:
					if d.SetCookie == "" {
						t.Fatal("no cookie issued")
					}
					known = req(strings.TrimPrefix(strings.SplitN(d.SetCookie, ";", 2)[0], ks.Name+"="))
				case ks.Envelope:
					if len(reply.SetHeaders) != 1 {
						t.Fatalf("no envelope: %+v", reply)
					}
					known = req(reply.SetHeaders[0][1])
				case ks.Type == SourceAppCookie:
					known = req("app-1")
				case ks.Type == SourceUpstreamHeader:
					known = req("mcp-1")
				}
				if c.EnvoyAlone {
					if c.Known != 0 || !p.EnvoyVerifies() {
						t.Errorf("%s: Envoy alone, but %+v in a pool Envoy does not verify", ks.Type, c)
					}
				} else if d := e.Decide(known); messages(d) != c.Known || d.Outcome != OutcomePinned {
					t.Errorf("%s: an established session took %d messages (%s), Costs says %d", ks.Type, messages(d), d.Outcome, c.Known)
				}
				if c.Refresh > 0 {
					clock.t = clock.t.Add(2 * time.Minute)
					if d := e.Decide(known); messages(d) != c.Refresh || d.SetCookie == "" {
						t.Errorf("%s: a refresh took %d messages, Costs says %d", ks.Type, messages(d), c.Refresh)
					}
				}
			}
		})
	}
}
