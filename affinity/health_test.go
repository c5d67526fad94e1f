package affinity

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func healthEngine(t *testing.T, clock *fixedClock) *Engine {
	t.Helper()
	cfg, err := ParseConfig("t.yaml", []byte("keys: {env: K}\npools:\n  - mode: opaque\n    health:\n      passive: {backoff: 10s, max_backoff: 40s, status_5xx: 3, window: 5s}\n"+
		"    hosts:\n      - {name: web-1, address: '127.0.0.1:80'}\n      - {name: web-2, address: '127.0.0.2:80'}\n      - {name: web-3, address: '127.0.0.3:80'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(cfg.Build(testKeyring(t)), clock.now)
}

func placedOn(e *Engine, n int) map[string]int {
	count := map[string]int{}
	for range n {
		count[e.Decide(Request{}).HostID]++
	}
	return count
}

func TestPassiveHealth(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := healthEngine(t, clock)
	cookie := sessionOn(t, e, "web-2")
	if !e.markDown(DefaultPoolName, "127.0.0.2:80") {
		t.Fatal("not marked down")
	}
	if placedOn(e, 200)["web-2"] != 0 {
		t.Fatal("new sessions placed on a host that is down")
	}
	if d := e.Decide(Request{CookieHeaders: []string{cookie}}); d.Outcome != OutcomeRebound || d.HostID == "web-2" {
		t.Fatalf("session of a down host: %+v", d)
	}
	// Back after the backoff; a second failure doubles it.
	steps := []struct {
		at   time.Duration
		down bool
	}{{9 * time.Second, true}, {10 * time.Second, false}}
	for _, st := range steps {
		clock.t = t0.Add(st.at)
		if got := placedOn(e, 200)["web-2"] == 0; got != st.down {
			t.Fatalf("at +%v down = %v, want %v", st.at, got, st.down)
		}
	}
	e.markDown(DefaultPoolName, "127.0.0.2:80")
	clock.t = t0.Add(29 * time.Second)
	if placedOn(e, 200)["web-2"] != 0 {
		t.Fatal("the second backoff did not double (20 s)")
	}
	clock.t = t0.Add(30 * time.Second)
	if placedOn(e, 200)["web-2"] == 0 {
		t.Fatal("still down after the doubled backoff")
	}
	// 5xx answers: three within the window mark it down.
	for range 2 {
		e.count5xx(DefaultPoolName, "127.0.0.3:80")
	}
	if placedOn(e, 200)["web-3"] == 0 {
		t.Fatal("down after two 5xx answers")
	}
	if !e.count5xx(DefaultPoolName, "127.0.0.3:80") || placedOn(e, 200)["web-3"] != 0 {
		t.Fatal("not down after three 5xx answers within the window")
	}
}

func TestActiveHealthVerdicts(t *testing.T) {
	clock := &fixedClock{t: t0}
	cfg, err := ParseConfig("t.yaml", []byte("keys: {env: K}\npools:\n  - mode: opaque\n    health: {active: {}}\n    hosts: [{name: web-1, address: '127.0.0.1:80'}, {name: web-2, address: '127.0.0.2:80'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(cfg.Build(testKeyring(t)), clock.now)
	e.SetActiveHealth(DefaultPoolName, "127.0.0.2:80", false)
	clock.t = t0.Add(time.Hour)
	if placedOn(e, 100)["web-2"] != 0 {
		t.Fatal("a host failing its active check took sessions")
	}
	e.SetActiveHealth(DefaultPoolName, "127.0.0.2:80", true)
	if placedOn(e, 100)["web-2"] == 0 {
		t.Fatal("a recovered host took no session")
	}
}

// TestPassiveHealthCap: passive signals, which any client can cause (a
// cookie-less request answered 500), hold down at most max_down_percent of
// a pool's hosts, and at least one.
func TestPassiveHealthCap(t *testing.T) {
	tests := []struct {
		name     string
		percent  string // "" for the default
		wantDown int
	}{
		{"default: 10% of 9 hosts, at least one", "", 1},
		{"50% of 9", "max_down_percent: 50, ", 4},
		{"100%: every host may go", "max_down_percent: 100, ", 9},
		{"0%: still one", "max_down_percent: 0, ", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fixedClock{t: t0}
			var b strings.Builder
			b.WriteString("keys: {env: K}\npools:\n  - mode: opaque\n    health:\n      passive: {" + tt.percent + "status_5xx: 1}\n    hosts:\n")
			for i := 1; i <= 9; i++ {
				fmt.Fprintf(&b, "      - {name: web-%d, address: '127.0.0.%d:80'}\n", i, i)
			}
			e := NewEngine(mustBuild(t, b.String()), clock.now)
			// Nine cookie-less requests, each answered 500 by another host.
			for i := 1; i <= 9; i++ {
				e.count5xx(DefaultPoolName, fmt.Sprintf("127.0.0.%d:80", i))
			}
			p, _ := e.Snapshot().Pool(DefaultPoolName, "")
			if down := 9 - p.Active.Len(); down != tt.wantDown {
				t.Fatalf("%d hosts held down, want %d", down, tt.wantDown)
			}
			if refused := e.PassiveHoldsRefused(); refused != uint64(9-tt.wantDown) {
				t.Fatalf("%d holds refused, want %d", refused, 9-tt.wantDown)
			}
			// Once a hold ends, another host may be held.
			clock.t = t0.Add(time.Minute)
			e.markDown(DefaultPoolName, "127.0.0.9:80")
			if p, _ := e.Snapshot().Pool(DefaultPoolName, ""); p.Active.Len() != 8 {
				t.Fatalf("after the holds ended, %d active hosts, want 8", p.Active.Len())
			}
		})
	}
}
