package affinity

import (
	"slices"
	"strings"
	"testing"
)

func TestParseConfigOutput(t *testing.T) {
	pool := func(mode, extra, output string) string {
		return "keys: {env: K}\npools:\n  - mode: " + mode + "\n" + extra + "    hosts: [{address: '127.0.0.1:1'}]\n    output:\n" + output
	}
	tests := []struct {
		name string
		yaml string
		want string // "" = valid
	}{
		{"both headers", pool("opaque", "", "      header: x-affinity-destination\n      stateful_session_header: x-session-host\n"), ""},
		{"the conventional override header", pool("opaque", "", "      header: x-gateway-destination-endpoint\n"), ""},
		{"verified mode", pool("verified", "", "      header: x-affinity-destination\n"),
			"c.yaml:6: pools[0].output.header: needs mode opaque (the pool's mode is verified): in verified and native modes Envoy routes established sessions without asking the service"},
		{"mode left out is verified", strings.Replace(pool("opaque", "", "      stateful_session_header: x-session-host\n"), "  - mode: opaque\n", "  - name: app\n", 1),
			"c.yaml:6: pools[0].output.stateful_session_header: needs mode opaque (the pool's mode is verified)"},
		{"native mode", pool("native", "", "      stateful_session_header: x-session-host\n"),
			"c.yaml:6: pools[0].output.stateful_session_header: needs mode opaque (the pool's mode is native)"},
		{"upper case", pool("opaque", "", "      header: X-Affinity-Destination\n"),
			`c.yaml:6: pools[0].output.header: "X-Affinity-Destination" is not a header name in lower case`},
		{"not a token", pool("opaque", "", "      header: 'x affinity'\n"),
			`c.yaml:6: pools[0].output.header: "x affinity" is not a header name`},
		{"pseudo-header", pool("opaque", "", "      header: ':authority'\n"),
			`c.yaml:6: pools[0].output.header: ":authority" is a pseudo-header`},
		{"host", pool("opaque", "", "      header: host\n"),
			`c.yaml:6: pools[0].output.header: "host" is read by Envoy or the service for something else`},
		{"cookie", pool("opaque", "", "      stateful_session_header: cookie\n"),
			`c.yaml:6: pools[0].output.stateful_session_header: "cookie" is read by Envoy or the service`},
		{"x-envoy-", pool("opaque", "", "      header: x-envoy-original-dst-host\n"),
			`c.yaml:6: pools[0].output.header: "x-envoy-original-dst-host": Envoy does not let an ext_proc set x-envoy-* headers`},
		{"the same header twice", pool("opaque", "", "      header: x-h\n      stateful_session_header: x-h\n"),
			`c.yaml:7: pools[0].output.stateful_session_header: "x-h" is also output.header`},
		{"an upstream header", pool("opaque", "    upstream_headers: {successor: x-h}\n", "      header: x-h\n"),
			`c.yaml:7: pools[0].output.header: "x-h" is also upstream_headers.successor`},
		{"a key source", pool("opaque", "    key_sources: [{type: header, name: X-User}]\n", "      header: x-user\n"),
			`c.yaml:7: pools[0].output.header: "x-user" is also key_sources[0] (the client sends it)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("c.yaml", []byte(tt.yaml))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Pools[0].Output.Header == "" && cfg.Pools[0].Output.StatefulSessionHeader == "" {
					t.Fatal("output headers lost")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant %q", err, tt.want)
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != 1 {
				t.Errorf("%d errors, want 1:\n%v", n, err)
			}
		})
	}
}

// TestDecideOutput: decisions of a pool carry its output headers, also
// those Envoy's load balancer is left to (so the server removes a client's
// copy); a request no pool takes names every pool's output headers for
// removal.
func TestDecideOutput(t *testing.T) {
	cfg, err := ParseConfig("t.yaml", []byte(`keys: {env: K}
pools:
  - name: a
    mode: opaque
    output: {header: x-affinity-destination}
    hosts: [{address: '127.0.0.1:1'}]
  - name: b
    mode: opaque
    key_sources: [{type: header, name: x-user}]
    output: {header: x-affinity-destination, stateful_session_header: x-session-host}
    hosts: [{address: '127.0.0.2:1'}]
  - name: c
    hosts: [{address: '127.0.0.3:1'}]
`))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fixedClock{t: t0}
	e := NewEngine(cfg.Build(testKeyring(t)), clock.now)
	a := OutputHeaders{Header: "x-affinity-destination"}
	b := OutputHeaders{Header: "x-affinity-destination", StatefulSession: "x-session-host"}

	newSession := e.Decide(Request{Cluster: "a"})
	pinned := e.Decide(Request{Cluster: "a", CookieHeaders: []string{cookieOf(t, newSession.SetCookie)}})
	tests := []struct {
		name    string
		d       Decision
		outcome Outcome
		output  OutputHeaders
		remove  []string
	}{
		{"new session", newSession, OutcomeNew, a, nil},
		{"established session (cached)", pinned, OutcomePinned, a, nil},
		{"header key", e.Decide(Request{Cluster: "b", Headers: mapHeaders{"x-user": "u1"}}), OutcomeNew, b, nil},
		{"no key: Envoy's load balancer picks, the client's copies go", e.Decide(Request{Cluster: "b"}), OutcomePassThrough, b, []string{"x-affinity-destination", "x-session-host"}},
		{"a pool without output", e.Decide(Request{Cluster: "c"}), OutcomeNew, OutputHeaders{}, nil},
		{"no pool", e.Decide(Request{Cluster: "other"}), OutcomePassThrough, OutputHeaders{}, []string{"x-affinity-destination", "x-session-host"}},
	}
	for _, tt := range tests {
		if tt.d.Outcome != tt.outcome || tt.d.Output != tt.output || !slices.Equal(tt.d.RemoveHeaders, tt.remove) {
			t.Errorf("%s: outcome %v, output %+v, remove %v; want %v, %+v, %v", tt.name, tt.d.Outcome, tt.d.Output, tt.d.RemoveHeaders, tt.outcome, tt.output, tt.remove)
		}
	}
	if pinned.OverrideList == "" {
		t.Error("the established session's decision is not the cached kind")
	}
}
