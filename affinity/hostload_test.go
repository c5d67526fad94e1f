package affinity

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// loadSnapshot is an opaque pool of n hosts (web-i at 127.0.0.i:80) with a
// load block (stale after 5s), and bounded loads when bounded > 0.
func loadSnapshot(t testing.TB, n int, bounded float64) *Snapshot {
	t.Helper()
	var b strings.Builder
	b.WriteString("keys: {env: K}\npools:\n  - name: app\n    mode: opaque\n    load: {envoy_admins: ['127.0.0.1:9901'], interval: 1s, stale_after: 5s}\n")
	if bounded > 0 {
		fmt.Fprintf(&b, "    bounded_load: {factor: %v}\n", bounded)
	}
	b.WriteString("    hosts:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "      - {name: web-%d, address: '127.0.0.%d:80'}\n", i, i)
	}
	return mustBuild(t, b.String())
}

// byName turns loads by host name into loads by address.
func byName(loads map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for name, l := range loads {
		out["127.0.0."+strings.TrimPrefix(name, "web-")+":80"] = l
	}
	return out
}

// TestPlaceByLoad: new sessions skip a host above factor × mean + 1, take
// the less busy of their first two eligible choices, and place as without
// the block when the reading is stale.
func TestPlaceByLoad(t *testing.T) {
	// rule is the primary the rendezvous order and the loads give.
	type rule func(choices []Host, load map[string]float64) string
	firstChoice := func(choices []Host, _ map[string]float64) string { return choices[0].ID }
	twoChoices := func(limit float64) rule {
		return func(choices []Host, load map[string]float64) string {
			var ok []Host
			for _, h := range choices {
				if load[h.ID] <= limit {
					ok = append(ok, h)
				}
			}
			if len(ok) > 1 && max(load[ok[1].ID]-loadTie, 0) < max(load[ok[0].ID]-loadTie, 0) {
				return ok[1].ID
			}
			return ok[0].ID
		}
	}
	tests := []struct {
		name  string
		hosts int
		load  map[string]float64
		age   time.Duration
		want  rule
		// most is the most new sessions of 300 a host may get (0: any).
		most map[string]int
		// limit is the in-flight cap in force (0: none): a session whose
		// first choice is over it is overloaded.
		limit float64
	}{
		// mean 10, limit 13.5: web-1 takes none.
		{name: "hot host skipped", hosts: 3, load: map[string]float64{"web-1": 30}, want: twoChoices(13.5), most: map[string]int{"web-1": 0}, limit: 13.5},
		// mean 3.75, limit 5.69: every host passes; web-4 (missing from
		// the reading: 0) wins wherever it is one of the first two.
		{name: "idle host preferred within two choices", hosts: 4, load: map[string]float64{"web-1": 5, "web-2": 5, "web-3": 5}, want: twoChoices(5.69), limit: 5.69},
		{name: "equal loads: the earlier, the rendezvous order", hosts: 3, load: map[string]float64{"web-1": 2, "web-2": 2, "web-3": 2}, want: firstChoice},
		{name: "one request or none: equally idle, the rendezvous order", hosts: 3, load: map[string]float64{"web-1": 1, "web-2": 0, "web-3": 1}, want: firstChoice},
		// mean 7, limit 9.75: every host passes, and above one request
		// a single request apart decides.
		{name: "busy hosts one request apart: the less busy", hosts: 3, load: map[string]float64{"web-1": 8, "web-2": 7, "web-3": 6}, want: twoChoices(9.75), limit: 9.75},
		// mean 2.33, limit 3.92: every host passes.
		{name: "two requests apart: the less busy", hosts: 3, load: map[string]float64{"web-1": 3, "web-2": 1, "web-3": 3}, want: twoChoices(3.92), limit: 3.92},
		{name: "stale reading: the rendezvous order", hosts: 3, load: map[string]float64{"web-1": 30}, age: 6 * time.Second, want: firstChoice},
		{name: "just fresh", hosts: 3, load: map[string]float64{"web-1": 30}, age: 5 * time.Second, want: twoChoices(13.5), most: map[string]int{"web-1": 0}, limit: 13.5},
		{name: "nothing in flight: the rendezvous order", hosts: 5, load: map[string]float64{}, want: firstChoice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(loadSnapshot(t, tt.hosts, 0), (&fixedClock{t: t0}).now)
			e.SetLoad("app", byName(tt.load), t0.Add(-tt.age))
			pool, _ := e.Snapshot().Pool("app", "")
			count := map[string]int{}
			for range 300 {
				d := e.Decide(Request{Cluster: "app"})
				choices := pool.Active.Choices(d.Session.ID, MaxRank)
				if want := tt.want(choices, tt.load); d.HostID != want {
					t.Fatalf("session placed on %s, want %s (choices %v, load %v)", d.HostID, want, choices, tt.load)
				}
				if over := tt.limit > 0 && tt.load[choices[0].ID] > tt.limit; d.Overloaded != over {
					t.Fatalf("overloaded %v, want %v: placed on %s, first choice %s", d.Overloaded, over, d.HostID, choices[0].ID)
				}
				// The successor is the choice after the primary.
				for i, h := range choices {
					if h.ID == d.HostID && d.Hosts[1] != choices[(i+1)%len(choices)].Address {
						t.Fatalf("successor %s, choices %v", d.Hosts[1], choices)
					}
				}
				count[d.HostID]++
			}
			for h, most := range tt.most {
				if count[h] > most {
					t.Errorf("%s took %d new sessions, at most %d wanted (%v)", h, count[h], most, count)
				}
			}
			if fresh := e.LoadFresh("app", t0); fresh != (tt.age <= 5*time.Second) {
				t.Errorf("fresh %v at age %v", fresh, tt.age)
			}
		})
	}
}

// TestPlaceByLoadAndSessions: with bounded loads too, a host must pass both
// caps; the session cap still holds everywhere.
func TestPlaceByLoadAndSessions(t *testing.T) {
	tests := []struct {
		factor float64
		hot    int // the new sessions the hot host takes
	}{
		// Room for web-2 and web-3 under 2.0: the hot host takes none.
		{factor: 2.0, hot: 0},
		// Under 1.0 web-2 and web-3 fill up; then no choice passes both
		// and the host with room takes it, hot or not: 10/10/10.
		{factor: 1.0, hot: 10},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.factor), func(t *testing.T) {
			e := NewEngine(loadSnapshot(t, 3, tt.factor), (&fixedClock{t: t0}).now)
			e.SetLoad("app", byName(map[string]float64{"web-1": 30}), t0)
			count := map[string]int{}
			for n := range 30 {
				d := e.Decide(Request{Cluster: "app"})
				count[d.HostID]++
				if limit := int(math.Ceil(tt.factor * float64(n+1) / 3)); count[d.HostID] > limit {
					t.Fatalf("session %d: %s holds %d, over the cap %d", n, d.HostID, count[d.HostID], limit)
				}
			}
			if count["web-1"] != tt.hot {
				t.Fatalf("30 new sessions: %v, the hot host should take %d", count, tt.hot)
			}
		})
	}
}

// TestLoadKeepsSessionsAndFollowsHosts: a hot host keeps its established
// sessions; when hosts change the reading is indexed anew (a joining host
// it lacks counts 0); a pool without the block ignores readings.
func TestLoadKeepsSessionsAndFollowsHosts(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := NewEngine(loadSnapshot(t, 3, 0), clock.now)
	var onWeb1 []string
	for len(onWeb1) < 5 {
		if d := e.Decide(Request{Cluster: "app"}); d.HostID == "web-1" {
			onWeb1 = append(onWeb1, cookieHeader(d.SetCookie))
		}
	}
	e.SetLoad("app", byName(map[string]float64{"web-1": 30}), t0)
	for _, c := range onWeb1 {
		if d := e.Decide(Request{Cluster: "app", CookieHeaders: []string{c}}); d.Outcome != OutcomePinned || d.HostID != "web-1" {
			t.Fatalf("a session of the hot host moved: %+v", d)
		}
	}
	e.Update(loadSnapshot(t, 4, 0))
	if !e.LoadFresh("app", t0) {
		t.Fatal("the reading was lost when the hosts changed")
	}
	if load, at, ok := e.HostLoad("app"); !ok || !at.Equal(t0) || load["127.0.0.1:80"] != 30 {
		t.Fatalf("host load %v at %v (%v)", load, at, ok)
	}
	e.Update(modeSnapshot(t, ModeOpaque, "web-1", "web-2"))
	if _, _, ok := e.HostLoad("default"); ok || e.LoadFresh("default", t0) {
		t.Fatal("a pool without a load block has a reading")
	}
	e.SetLoad("default", byName(map[string]float64{"web-1": 30}), t0)
	if e.LoadFresh("default", t0) {
		t.Fatal("a pool without a load block places by load")
	}
}

// BenchmarkDecideNewLoad is a new session's decision over ten hosts: in
// a pool without a load block, with one but a stale reading, and with a
// fresh reading (one host hot).
func BenchmarkDecideNewLoad(b *testing.B) {
	names := make([]string, 10)
	for i := range names {
		names[i] = fmt.Sprintf("web-%d", i+1)
	}
	for _, variant := range []string{"off", "stale", "fresh"} {
		snap := loadSnapshot(b, 10, 0)
		if variant == "off" {
			snap = modeSnapshot(b, ModeOpaque, names...)
		}
		e := NewEngine(snap, (&fixedClock{t: t0}).now)
		if variant == "fresh" {
			load := map[string]float64{"web-1": 40}
			for i := 2; i <= 10; i++ {
				load[fmt.Sprintf("web-%d", i)] = float64(i % 4)
			}
			e.SetLoad("app", byName(load), t0)
		}
		b.Run(variant, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Decide(Request{Cluster: "app"})
			}
		})
	}
}

// BenchmarkChooseLoad is the placement alone (the ranking and the choice,
// and the override list's one slice) over ten hosts, without and with a
// fresh load reading.
func BenchmarkChooseLoad(b *testing.B) {
	for _, fresh := range []bool{false, true} {
		e := NewEngine(loadSnapshot(b, 10, 0), (&fixedClock{t: t0}).now)
		if fresh {
			e.SetLoad("app", byName(map[string]float64{"web-1": 40, "web-2": 3, "web-3": 1}), t0)
		}
		pool, _ := e.Snapshot().Pool("app", "")
		b.Run(map[bool]string{false: "without", true: "fresh"}[fresh], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.choose(pool, pool.Active, "a-session-id-of-some-length", t0)
			}
		})
	}
}

// BenchmarkLoadShares reports the share of 10,000 new sessions an idle
// host that just joined takes when ten others carry 5 requests each (its
// fair share is 1/11), and the share a hot host takes (3× the others).
func BenchmarkLoadShares(b *testing.B) {
	for range b.N {
		joined := NewEngine(loadSnapshot(b, 11, 0), (&fixedClock{t: t0}).now)
		hot := NewEngine(loadSnapshot(b, 10, 0), (&fixedClock{t: t0}).now)
		busy := map[string]float64{}
		for i := 1; i <= 10; i++ {
			busy[fmt.Sprintf("web-%d", i)] = 5
		}
		joined.SetLoad("app", byName(busy), t0)
		busy["web-1"] = 15
		hot.SetLoad("app", byName(busy), t0)
		const n = 10000
		var toJoined, toHot int
		for range n {
			if joined.Decide(Request{Cluster: "app"}).HostID == "web-11" {
				toJoined++
			}
			if hot.Decide(Request{Cluster: "app"}).HostID == "web-1" {
				toHot++
			}
		}
		b.ReportMetric(float64(toJoined)/n*11, "joined/fair")
		b.ReportMetric(float64(toHot)/n*10, "hot/fair")
	}
}
