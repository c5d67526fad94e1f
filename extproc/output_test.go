package extproc

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

var bothOutputs = affinity.OutputHeaders{Header: "x-affinity-destination", StatefulSession: "x-session-host"}

// requestMutation is what the answer to a request-headers message does to
// the request: the headers it sets (name → value) and removes.
func requestMutation(t *testing.T, r *extprocv3.ProcessingResponse) (map[string]string, []string) {
	t.Helper()
	m := r.GetRequestHeaders().GetResponse().GetHeaderMutation()
	set := map[string]string{}
	for _, h := range m.GetSetHeaders() {
		if h.GetHeader().GetValue() != "" || h.GetAppend().GetValue() {
			t.Fatalf("header %v: want raw_value only, replacing", h)
		}
		set[h.GetHeader().GetKey()] = string(h.GetHeader().GetRawValue())
	}
	return set, m.GetRemoveHeaders()
}

func TestOutputHeaders(t *testing.T) {
	hosts := []string{"10.0.0.1:80", "10.0.0.2:80"}
	// Standard base64 with its padding, as Envoy's Base64::decode wants:
	// "10.0.0.1:80" is 11 bytes, so one '='.
	const primary64 = "MTAuMC4wLjE6ODA="
	tests := []struct {
		name       string
		d          affinity.Decision
		set        map[string]string
		remove     []string
		noResponse bool // the response phase is switched off
	}{
		{
			name: "new session",
			d:    affinity.Decision{Outcome: affinity.OutcomeNew, Hosts: hosts, SetCookie: "affinity=t", Output: bothOutputs},
			set:  map[string]string{"x-affinity-destination": "10.0.0.1:80,10.0.0.2:80", "x-session-host": primary64},
		},
		{
			name:       "pinned, not cached (a header key)",
			d:          affinity.Decision{Outcome: affinity.OutcomePinned, Hosts: hosts, Output: bothOutputs},
			set:        map[string]string{"x-affinity-destination": "10.0.0.1:80,10.0.0.2:80", "x-session-host": primary64},
			noResponse: true,
		},
		{
			name:       "pinned, cached answer",
			d:          affinity.Decision{Outcome: affinity.OutcomePinned, Hosts: hosts, OverrideList: "10.0.0.1:80,10.0.0.2:80", Output: bothOutputs},
			set:        map[string]string{"x-affinity-destination": "10.0.0.1:80,10.0.0.2:80", "x-session-host": primary64},
			noResponse: true,
		},
		{
			name: "re-bound, beside the application's headers",
			d: affinity.Decision{Outcome: affinity.OutcomeRebound, Hosts: []string{"10.0.0.12:80"}, SetCookie: "affinity=t",
				SetHeaders: [][2]string{{"x-session-rebound", "host-left"}}, RemoveHeaders: []string{"x-session-rebound"}, Output: bothOutputs},
			set:    map[string]string{"x-session-rebound": "host-left", "x-affinity-destination": "10.0.0.12:80", "x-session-host": "MTAuMC4wLjEyOjgw"},
			remove: []string{"x-session-rebound"},
		},
		{
			name:       "only the stateful session header",
			d:          affinity.Decision{Outcome: affinity.OutcomePinned, Hosts: hosts, OverrideList: "10.0.0.1:80,10.0.0.2:80", Output: affinity.OutputHeaders{StatefulSession: "x-session-host"}},
			set:        map[string]string{"x-session-host": primary64},
			noResponse: true,
		},
		{
			name:       "pass-through (no key): the client's copies removed",
			d:          affinity.Decision{Pool: "app", Reason: affinity.ReasonNoKey, Output: bothOutputs, RemoveHeaders: []string{"x-affinity-destination", "x-session-host"}},
			set:        map[string]string{},
			remove:     []string{"x-affinity-destination", "x-session-host"},
			noResponse: true,
		},
		{
			name:       "no pool: the headers the engine names removed",
			d:          affinity.Decision{Reason: affinity.ReasonNoPool, RemoveHeaders: []string{"x-affinity-destination", "x-session-host"}},
			set:        map[string]string{},
			remove:     []string{"x-affinity-destination", "x-session-host"},
			noResponse: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := NewServer(&fakeDecider{d: tt.d}, nil)
			// The client sends its own copies, naming another host.
			req := requestHeaders("app", "cookie", "affinity=x", "x-affinity-destination", "10.6.6.6:80", "x-session-host", "MTAuNi42LjY6ODA=")
			var answers []*extprocv3.ProcessingResponse
			for range 2 {
				fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{req}}
				if err := srv.Process(fs); err != nil {
					t.Fatal(err)
				}
				answers = append(answers, fs.sent[0])
			}
			for i, r := range answers {
				set, remove := requestMutation(t, r)
				if len(set) != len(tt.set) {
					t.Errorf("request %d: set %v, want %v", i, set, tt.set)
				}
				for k, v := range tt.set {
					if set[k] != v {
						t.Errorf("request %d: %s = %q, want %q", i, k, set[k], v)
					}
				}
				if !slices.Equal(remove, tt.remove) {
					t.Errorf("request %d: removed %v, want %v", i, remove, tt.remove)
				}
				if got := r.GetModeOverride() != nil; got != tt.noResponse {
					t.Errorf("request %d: response phase switched off = %v, want %v", i, got, tt.noResponse)
				}
				if want := strings.Join(tt.d.Hosts, ","); destination(t, r) != want {
					t.Errorf("request %d: metadata %q, want %q", i, destination(t, r), want)
				}
			}
			if tt.d.OverrideList != "" && answers[0] != answers[1] {
				t.Error("an established session's answer was built twice: want the shared one")
			}
		})
	}
}

// TestSharedAnswersPerOutput: two pools with the same hosts but other
// output headers share no answer.
func TestSharedAnswersPerOutput(t *testing.T) {
	override := "10.0.0.1:80,10.0.0.2:80"
	srv := NewServer(&fakeDecider{}, nil)
	plain := srv.sharedAnswer(override, affinity.OutputHeaders{})
	withHeader := srv.sharedAnswer(override, affinity.OutputHeaders{Header: "x-a"})
	withOther := srv.sharedAnswer(override, affinity.OutputHeaders{Header: "x-b"})
	if plain.GetRequestHeaders().GetResponse().GetHeaderMutation() != nil {
		t.Fatalf("no output headers, yet a mutation: %v", plain)
	}
	for _, c := range []struct {
		r    *extprocv3.ProcessingResponse
		name string
	}{{withHeader, "x-a"}, {withOther, "x-b"}} {
		set, _ := requestMutation(t, c.r)
		if len(set) != 1 || set[c.name] != override {
			t.Errorf("answer for %s sets %v", c.name, set)
		}
	}
	if srv.sharedAnswer(override, affinity.OutputHeaders{Header: "x-a"}) != withHeader {
		t.Error("the same key built a second answer")
	}
}

// TestOutputHeadersWithEngine runs the real engine: the header follows the
// session's host on its new, established and cached requests, whatever the
// client sends.
func TestOutputHeadersWithEngine(t *testing.T) {
	cfg, err := affinity.ParseConfig("o.yaml", []byte(`keys: {env: K}
pools:
  - mode: opaque
    output: {header: x-affinity-destination, stateful_session_header: x-session-host}
    hosts: [{address: '127.0.0.1:8081'}, {address: '127.0.0.1:8082'}, {address: '127.0.0.1:8083'}]
`))
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := affinity.ParseKeyring("e1:ed25519:ZWQyNTUxOS1zZWVkLWZvci10ZXN0cy0wMTIzNDU2Nzg")
	e := affinity.NewEngine(cfg.Build(ring), func() time.Time { return time.Unix(1_800_000_000, 0) })
	srv := NewServer(e, nil)
	send := func(headers ...string) *extprocv3.ProcessingResponse {
		fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{requestHeaders("", headers...)}}
		if err := srv.Process(fs); err != nil {
			t.Fatal(err)
		}
		return fs.sent[0]
	}
	forged := []string{"x-affinity-destination", "127.0.0.1:9999", "x-session-host", "MTI3LjAuMC4xOjk5OTk="}
	first := send(forged...)
	set, _ := requestMutation(t, first)
	want := destination(t, first)
	if set["x-affinity-destination"] != want || strings.Count(want, ",") != 1 {
		t.Fatalf("new session: header %q, metadata %q", set["x-affinity-destination"], want)
	}
	// An established session: its cookie, as the client sends it back.
	d := e.Decide(affinity.Request{})
	cookie, _, _ := strings.Cut(d.SetCookie, ";")
	primary := d.Hosts[0]
	established := send(append([]string{"cookie", cookie}, forged...)...)
	again := send("cookie", cookie)
	for i, r := range []*extprocv3.ProcessingResponse{established, again} {
		set, remove := requestMutation(t, r)
		if set["x-affinity-destination"] != destination(t, r) || !strings.HasPrefix(set["x-affinity-destination"], primary+",") {
			t.Errorf("request %d: header %q, metadata %q, primary %s", i, set["x-affinity-destination"], destination(t, r), primary)
		}
		if set["x-session-host"] != map[string]string{"127.0.0.1:8081": "MTI3LjAuMC4xOjgwODE=", "127.0.0.1:8082": "MTI3LjAuMC4xOjgwODI=", "127.0.0.1:8083": "MTI3LjAuMC4xOjgwODM="}[primary] {
			t.Errorf("request %d: x-session-host %q for %s", i, set["x-session-host"], primary)
		}
		if len(remove) != 0 {
			t.Errorf("request %d: removed %v; the set replaces the client's copy", i, remove)
		}
	}
	if established != again {
		t.Error("the established session's answers are not the shared one")
	}
}
