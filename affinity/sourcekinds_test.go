package affinity

import (
	"fmt"
	"strings"
	"testing"
)

// storedPrefixes are the store prefixes of the kinds whose keys are
// stored. They are in the shared store (Redis): they never change.
var storedPrefixes = map[KeySource]string{
	SourceHeader:         "h:",
	SourceAppCookie:      "c:",
	SourceQuery:          "q:",
	SourceClientAddress:  "a:",
	SourceUpstreamHeader: "u:",
}

// minimalKeySource parses the smallest configuration of a pool keyed by one
// source of type t alone: the type, or the type and a name.
func minimalKeySource(t *testing.T, typ KeySource) *Snapshot {
	t.Helper()
	var errs []string
	for _, entry := range []string{"{type: " + string(typ) + "}", "{type: " + string(typ) + ", name: x-session}"} {
		yaml := "keys: {env: K}\npools:\n  - mode: opaque\n    key_sources: [" + entry + "]\n" +
			"    hosts: [{name: web-1, address: '127.0.0.1:80'}, {name: web-2, address: '127.0.0.2:80'}, {name: web-3, address: '127.0.0.3:80'}]\n"
		cfg, err := ParseConfig("t.yaml", []byte(yaml))
		if err == nil {
			return cfg.Build(testKeyring(t))
		}
		errs = append(errs, err.Error())
	}
	t.Fatalf("%s: no minimal entry validates: %s", typ, strings.Join(errs, "; "))
	return nil
}

// TestKeyKinds walks the registered kinds of key source: each validates a
// minimal entry, stores its keys under a prefix of its own (the historic
// ones unchanged), and a request keyed by it goes where Explain says it
// goes.
func TestKeyKinds(t *testing.T) {
	if len(keyKinds) != len(storedPrefixes)+1 {
		t.Errorf("%d kinds registered, %d with a known store prefix and our cookie: a new kind needs its prefix in storedPrefixes", len(keyKinds), len(storedPrefixes))
	}
	prefixes := map[string]KeySource{}
	for _, r := range keyKinds {
		t.Run(string(r.typ), func(t *testing.T) {
			tr := r.kind.traits()
			switch want, stored := storedPrefixes[r.typ]; {
			case tr.binding == bindToken && tr.prefix != "":
				t.Errorf("our token is never stored, but has prefix %q", tr.prefix)
			case tr.binding != bindToken && (!stored || tr.prefix != want):
				t.Errorf("store prefix %q, want %q", tr.prefix, want)
			case tr.prefix != "" && prefixes[tr.prefix] != "":
				t.Errorf("store prefix %q is also %s's", tr.prefix, prefixes[tr.prefix])
			}
			prefixes[tr.prefix] = r.typ

			snap := minimalKeySource(t, r.typ)
			pool := snap.Pools[0]
			if got := pool.KeySources[0].Type; got != r.typ {
				t.Fatalf("the pool's source is %s", got)
			}
			e := NewEngine(snap, (&fixedClock{t: t0}).now)
			// One request carries a value for every kind.
			req := Request{Headers: mapHeaders{"x-session": "v1", ":path": "/?x-session=v1"},
				CookieHeaders: []string{"x-session=v1"}, SourceAddress: "192.0.2.7:5555"}
			first := e.Decide(req)
			if len(first.Hosts) == 0 {
				t.Fatalf("first request: %+v", first)
			}
			// Its response sets the value (a learned kind learns it) and
			// our cookie, if the pool issues one.
			e.Respond(&first, Upstream{Served: first.Hosts[0], SetCookies: []string{"x-session=v1; Path=/"}, Headers: mapHeaders{"x-session": "v1"}})
			if first.SetCookie != "" {
				req.CookieHeaders = append(req.CookieHeaders, cookieHeader(first.SetCookie))
			}
			d := e.Decide(req)
			if d.Outcome != OutcomePinned || d.HostID != first.HostID {
				t.Fatalf("the same key again: %+v, first on %s", d, first.HostID)
			}
			ks := &pool.KeySources[0]
			value, ok := ks.kind.read(ks, req)
			if !ok {
				t.Fatal("the request carries no value")
			}
			cookie, key := "", value
			if tr.binding == bindToken {
				cookie, key = value, ""
			}
			x, err := e.Explain(pool.Name, cookie, key)
			if err != nil {
				t.Fatal(err)
			}
			if x.Outcome != OutcomePinned.String() || x.Host != d.HostID {
				t.Fatalf("Explain(%q, %q): %s on %q, the request was pinned on %q: %v", cookie, key, x.Outcome, x.Host, d.HostID, x.Why)
			}
			if want := string(r.typ); tr.binding != bindToken && x.Input != want {
				t.Errorf("explained as %q, want %q", x.Input, want)
			}
		})
	}
}

// TestKeySourceTypesInTheReference: the configuration reference lists every
// type of key source.
func TestKeySourceTypesInTheReference(t *testing.T) {
	row := referenceRow(t, "pools[].key_sources[].type")
	for _, typ := range KeySourceTypes() {
		if !strings.Contains(row, "`"+string(typ)+"`") {
			t.Errorf("docs/configuration.md does not list key source type `%s`: %s", typ, row)
		}
	}
	if got, want := fmt.Sprint(KeySourceTypes()), "[cookie header app_cookie upstream_header query client_address]"; got != want {
		t.Errorf("types %s, want %s (the reference's order)", got, want)
	}
}

// TestPoolFallbackHash is what Envoy hashes while the service is away: our
// cookie when the pool has it, else the first key source.
func TestPoolFallbackHash(t *testing.T) {
	tests := []struct {
		sources string
		want    FallbackHash
	}{
		{"[{type: cookie}]", FallbackHash{Cookie: "affinity"}},
		{"[{type: header, name: X-Device}, {type: cookie}]", FallbackHash{Cookie: "affinity"}},
		{"[{type: header, name: X-Device}, {type: upstream_header, name: mcp-session-id}]", FallbackHash{Header: "x-device"}},
		{"[{type: query, name: sid}, {type: upstream_header, name: mcp-session-id}]", FallbackHash{Query: "sid"}},
		{"[{type: client_address}, {type: app_cookie, name: JSESSIONID}]", FallbackHash{SourceIP: true}},
		{"[{type: app_cookie, name: JSESSIONID}, {type: cookie}]", FallbackHash{Cookie: "affinity"}},
		{"[{type: app_cookie, name: JSESSIONID}]", FallbackHash{Cookie: "JSESSIONID"}},
	}
	for _, tt := range tests {
		p := sourcesSnapshot(t, tt.sources, "web-1").Pools[0]
		if got := p.FallbackHash(); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.sources, got, tt.want)
		}
	}
}

// TestPoolNeedsClientAddressAndTokenHeader: the answers Envoy's
// configuration needs of a pool's key sources.
func TestPoolNeedsClientAddressAndTokenHeader(t *testing.T) {
	tests := []struct {
		sources     string
		address     bool
		tokenHeader string
	}{
		{"[{type: cookie}]", false, ""},
		{"[{type: header, name: x}, {type: client_address, trusted_hops: 1}]", true, ""},
		{"[{type: upstream_header, name: Mcp-Session-Id, envelope: signed}]", false, "mcp-session-id"},
		{"[{type: upstream_header, name: mcp-session-id, envelope: signed}, {type: cookie}]", false, ""},
		{"[{type: upstream_header, name: mcp-session-id}]", false, ""},
	}
	for _, tt := range tests {
		p := sourcesSnapshot(t, tt.sources, "web-1").Pools[0]
		if got := p.NeedsClientAddress(); got != tt.address {
			t.Errorf("%s: needs the client address %v", tt.sources, got)
		}
		if got := p.TokenHeader(); got != tt.tokenHeader {
			t.Errorf("%s: token header %q, want %q", tt.sources, got, tt.tokenHeader)
		}
	}
}

// TestPoolEnvoyMode: Envoy verifies a pool's tokens only in verified mode
// and only when its sessions carry one; a verified pool without takes
// opaque mode's Envoy configuration.
func TestPoolEnvoyMode(t *testing.T) {
	tests := []struct {
		mode, sources string
		cookie        bool
		envoy         Mode
	}{
		{"verified", "[{type: cookie}]", true, ModeVerified},
		{"verified", "[{type: header, name: x-session-id}, {type: cookie}]", true, ModeVerified},
		{"verified", "[{type: upstream_header, name: mcp-session-id, envelope: signed}]", false, ModeVerified},
		{"verified", "[{type: header, name: x-session-id}]", false, ModeOpaque},
		{"verified", "[{type: query, name: sid}, {type: client_address}, {type: app_cookie, name: JSESSIONID}]", false, ModeOpaque},
		{"verified", "[{type: upstream_header, name: mcp-session-id}]", false, ModeOpaque},
		{"opaque", "[{type: cookie}]", true, ModeOpaque},
		{"opaque", "[{type: header, name: x-session-id}]", false, ModeOpaque},
		{"native", "[{type: cookie}]", true, ModeNative},
	}
	for _, tt := range tests {
		p := mustBuild(t, "keys: {env: K}\npools:\n  - mode: "+tt.mode+"\n    key_sources: "+tt.sources+"\n    hosts: [{address: '127.0.0.1:80'}]\n").Pools[0]
		if got := p.EnvoyMode(); got != tt.envoy || p.EnvoyVerifies() != (tt.envoy == ModeVerified) {
			t.Errorf("%s %s: Envoy's mode %s (verifies %v), want %s", tt.mode, tt.sources, got, p.EnvoyVerifies(), tt.envoy)
		}
		if p.CookieSessions() != tt.cookie {
			t.Errorf("%s %s: cookie sessions %v", tt.mode, tt.sources, p.CookieSessions())
		}
	}
}
