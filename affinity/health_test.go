package affinity

import (
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
