package affinity

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRuntimeDrainAndUndrain(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := NewEngine(modeSnapshot(t, ModeOpaque, "web-1", "web-2", "web-3"), clock.now)
	cookie := sessionOn(t, e, "web-2")
	deadline := t0.Add(2 * time.Minute)
	if err := e.DrainHost("default", "web-2", deadline); err != nil {
		t.Fatal(err)
	}
	if got := e.Snapshot().Pools[0].Draining["web-2"]; !got.Equal(deadline) {
		t.Fatalf("draining until %v, want %v", got, deadline)
	}
	for range 300 {
		if d := e.Decide(Request{}); d.HostID == "web-2" {
			t.Fatalf("new session on the drained host: %+v", d)
		}
	}
	if d := e.Decide(Request{CookieHeaders: []string{cookie}}); d.Outcome != OutcomePinned || d.HostID != "web-2" {
		t.Fatalf("before the deadline the session stays: %+v", d)
	}
	// A reload keeps the override: it is on top of the configuration.
	e.Update(modeSnapshot(t, ModeOpaque, "web-1", "web-2", "web-3"))
	if _, ok := e.Snapshot().Pools[0].Draining["web-2"]; !ok {
		t.Fatal("a reload dropped the runtime drain")
	}
	clock.t = deadline
	if d := e.Decide(Request{CookieHeaders: []string{cookie}}); d.Outcome != OutcomeRebound || d.Reason != ReasonDraining {
		t.Fatalf("after the deadline the session moves: %+v", d)
	}

	// Undrain beats a drain the configuration itself sets.
	e.Update(drainingSnapshot(t, ModeOpaque, false, t0.Add(time.Hour)))
	if err := e.UndrainHost("default", "web-2"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Snapshot().Pools[0].Draining["web-2"]; ok {
		t.Fatal("undrain left the host draining")
	}
	if e.Snapshot().Pools[0].Active.Len() != 3 {
		t.Fatalf("active hosts %d, want 3", e.Snapshot().Pools[0].Active.Len())
	}
	if ov := e.OperatorStates("default"); len(ov) != 1 || ov["web-2"].Draining {
		t.Fatalf("overrides %+v", ov)
	}
}

func TestRuntimeDrainErrors(t *testing.T) {
	e := NewEngine(modeSnapshot(t, ModeOpaque, "web-1"), (&fixedClock{t: t0}).now)
	for _, tc := range []struct {
		pool, host string
		want       error
	}{
		{"nope", "web-1", ErrUnknownPool},
		{"default", "web-9", ErrUnknownHost},
		{"default", "127.0.0.1:80", ErrUnknownHost},
	} {
		if err := e.DrainHost(tc.pool, tc.host, t0); !errors.Is(err, tc.want) {
			t.Errorf("DrainHost(%q, %q) = %v, want %v", tc.pool, tc.host, err, tc.want)
		}
		if err := e.UndrainHost(tc.pool, tc.host); !errors.Is(err, tc.want) {
			t.Errorf("UndrainHost(%q, %q) = %v, want %v", tc.pool, tc.host, err, tc.want)
		}
	}
}

func TestExplainCookie(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := NewEngine(modeSnapshot(t, ModeOpaque, "web-1", "web-2", "web-3"), clock.now)
	cookie := strings.TrimPrefix(sessionOn(t, e, "web-2"), "affinity=")
	stored := e.store.(*MemoryStore).Len()

	x, err := e.Explain("default", cookie, "")
	if err != nil {
		t.Fatal(err)
	}
	if x.Outcome != "pinned" || x.Host != "web-2" || x.Address != "127.0.0.2:80" || !x.Token.Valid || len(x.Order) != 3 || len(x.Override) != 2 {
		t.Fatalf("valid cookie: %+v", x)
	}
	// The explanation is the decision a request gets.
	d := e.Decide(Request{CookieHeaders: []string{"affinity=" + cookie}})
	if strings.Join(d.Hosts, ",") != strings.Join(x.Override, ",") {
		t.Fatalf("explained %v, decided %v", x.Override, d.Hosts)
	}

	tests := []struct {
		name, cookie     string
		outcome, reason  string
		host             string
		setup            func()
		wantOrder, valid bool
	}{
		{name: "garbage", cookie: "not-a-token", outcome: "new", reason: "invalid-cookie"},
		{name: "tampered", cookie: cookie[:len(cookie)-2] + "xx", outcome: "new", reason: "invalid-cookie"},
		{name: "expired-refresh", cookie: cookie, outcome: "pinned", reason: "expired", host: "web-2", wantOrder: true,
			setup: func() { clock.t = t0.Add(6 * time.Minute) }},
		{name: "host-left", cookie: cookie, outcome: "rebound", reason: "host-left", wantOrder: true, valid: true,
			setup: func() { clock.t = t0; e.Update(modeSnapshot(t, ModeOpaque, "web-1", "web-3")) }},
		{name: "past-absolute", cookie: cookie, outcome: "new", reason: "expired",
			setup: func() { clock.t = t0.Add(2 * time.Hour) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			x, err := e.Explain("default", tc.cookie, "")
			if err != nil {
				t.Fatal(err)
			}
			if x.Outcome != tc.outcome || x.Reason != tc.reason || (tc.host != "" && x.Host != tc.host) || (len(x.Order) > 0) != tc.wantOrder || x.Token.Valid != tc.valid || len(x.Why) == 0 {
				t.Fatalf("got %+v (token %+v)", x, x.Token)
			}
		})
	}
	if n := e.store.(*MemoryStore).Len(); n != stored {
		t.Fatalf("explaining changed the store: %d sessions, was %d", n, stored)
	}
}

func TestExplainKeyAndBoundedLoads(t *testing.T) {
	y := `keys: {env: K}
pools:
  - name: api
    mode: opaque
    bounded_load: {factor: 1.0}
    key_sources: [{type: header, name: x-user}]
    hosts:
      - {name: web-1, address: '127.0.0.1:80'}
      - {name: web-2, address: '127.0.0.2:80'}
`
	cfg, err := ParseConfig("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fixedClock{t: t0}
	e := NewEngine(cfg.Build(testKeyring(t)), clock.now)

	x, err := e.Explain("api", "", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if x.Input != "header" || x.Outcome != "new" || x.Reason != "new-key" || x.Host == "" {
		t.Fatalf("unknown key: %+v", x)
	}
	first := x.Host
	d := e.Decide(Request{Pool: "api", Headers: mapHeaders{"x-user": "alice"}})
	if d.HostID != first {
		t.Fatalf("explained %s, placed on %s", first, d.HostID)
	}
	x, _ = e.Explain("api", "", "alice")
	if x.Outcome != "pinned" || x.Host != first {
		t.Fatalf("known key: %+v", x)
	}
	// Fill alice's host: with c = 1.0 a key preferring it is placed on
	// the other host, and the order says the first choice is full.
	var bob string
	for _, k := range []string{"bob", "carol", "dave", "erin", "frank", "grace"} {
		if x, _ := e.Explain("api", "", k); x.Order[0].ID == first {
			bob = k
			break
		}
	}
	if bob == "" {
		t.Fatal("no key prefers " + first)
	}
	x, _ = e.Explain("api", "", bob)
	if x.Host == first || !x.Order[0].Full || x.Order[0].Limit != 1 || x.Reason != "overloaded" {
		t.Fatalf("overloaded first choice: %+v", x)
	}

	for _, tc := range []struct{ pool, cookie, key string }{{"nope", "", "k"}, {"api", "", ""}, {"api", "c", "k"}} {
		if _, err := e.Explain(tc.pool, tc.cookie, tc.key); err == nil {
			t.Errorf("Explain(%q, %q, %q) gave no error", tc.pool, tc.cookie, tc.key)
		}
	}
}
