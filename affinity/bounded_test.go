package affinity

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func boundedSnapshot(t testing.TB, factor float64, n int) *Snapshot {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "keys: {env: K}\npools:\n  - mode: opaque\n    bounded_load: {factor: %v}\n    session: {idle_timeout: 30s}\n    hosts:\n", factor)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "      - {name: web-%d, address: '127.0.0.%d:80'}\n", i, i)
	}
	return mustBuild(t, b.String())
}

func TestBoundedLoadCapOne(t *testing.T) {
	e := NewEngine(boundedSnapshot(t, 1.0, 3), (&fixedClock{t: t0}).now)
	count := map[string]int{}
	overloaded := 0
	for range 30 {
		d := e.Decide(Request{})
		count[d.HostID]++
		if d.Overloaded {
			overloaded++
		}
	}
	if count["web-1"] != 10 || count["web-2"] != 10 || count["web-3"] != 10 {
		t.Fatalf("30 new sessions with c = 1.0: %v, want 10/10/10", count)
	}
	if overloaded == 0 {
		t.Fatal("no session was taken by a later choice")
	}
}

func TestBoundedLoadKeepsExistingSessions(t *testing.T) {
	clock := &fixedClock{t: t0}
	e := NewEngine(boundedSnapshot(t, 1.0, 2), clock.now)
	var cookies []string
	for range 20 {
		cookies = append(cookies, cookieHeader(e.Decide(Request{}).SetCookie))
	}
	// Load is not a reason to move a session that has its host.
	for _, c := range cookies {
		if d := e.Decide(Request{CookieHeaders: []string{c}}); d.Outcome != OutcomePinned {
			t.Fatalf("an established session was moved: %+v", d)
		}
	}
}

// simulation places newSessions sessions over hosts with factor c, while
// requests of existing sessions arrive Zipf-skewed towards recent sessions,
// one request per simulated millisecond and 30 s of idle timeout. Halfway an
// extra host joins. It returns the worst ratio of a placed host's load to the
// cap at the moment of placement, and the new host's share of the new
// sessions in its first simulated second.
func simulation(t testing.TB, c float64, hosts, newSessions int) (worst, newHostShare float64) {
	clock := &fixedClock{t: t0}
	snap := boundedSnapshot(t, c, hosts)
	e := NewEngine(snap, clock.now)
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.2, 1, uint64(newSessions))
	type sess struct{ id, host string }
	var live []sess
	placed := 0
	var joinedAt time.Time
	var firstSecond, toNewHost int
	for placed < newSessions {
		clock.t = clock.t.Add(time.Millisecond)
		pool, _ := e.Snapshot().Pool("", "app")
		if len(live) == 0 || rng.Float64() < 0.3 {
			if placed == newSessions/2 {
				e.Update(boundedSnapshot(t, c, hosts+1))
				pool, _ = e.Snapshot().Pool("", "app")
				joinedAt = clock.t
			}
			// Ids from the seeded generator: the same run every time.
			id := fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())
			order, _ := e.choose(pool, pool.placement(), id, clock.t)
			load := map[string]int{}
			e.store.Load(pool.Name, clock.t, load)
			total := 0
			for _, h := range pool.placement().hosts {
				total += load[h.ID]
			}
			limit := math.Ceil(c * float64(total+1) / float64(pool.placement().Len()))
			worst = max(worst, float64(load[order[0].ID]+1)/limit)
			e.store.Seen(pool.Name, id, order[0].ID, clock.t)
			live = append(live, sess{id, order[0].ID})
			placed++
			if !joinedAt.IsZero() && clock.t.Sub(joinedAt) <= time.Second {
				firstSecond++
				if order[0].ID == fmt.Sprintf("web-%d", hosts+1) {
					toNewHost++
				}
			}
			continue
		}
		// An existing session's request: the most recent sessions are the
		// most likely.
		s := live[len(live)-1-int(zipf.Uint64()%uint64(len(live)))]
		e.store.Seen(DefaultPoolName, s.id, s.host, clock.t)
	}
	return worst, float64(toNewHost) / float64(firstSecond)
}

func TestBoundedLoadSimulation(t *testing.T) {
	worst, share := simulation(t, 1.25, 10, 50_000)
	t.Logf("50,000 sessions, 10 hosts, c = 1.25: worst placed load / cap %.3f; the 11th host took %.1f%% of new sessions in its first second", worst, share*100)
	if worst > 1 {
		t.Fatalf("a host went above the cap: %.3f", worst)
	}
	if share == 0 {
		t.Fatal("the new host took no new session in its first second")
	}
}

// BenchmarkBoundedLoadSimulation is the full simulation: one million
// sessions over ten hosts. Run with -benchtime 1x.
func BenchmarkBoundedLoadSimulation(b *testing.B) {
	for b.Loop() {
		worst, share := simulation(b, 1.25, 10, 1_000_000)
		b.ReportMetric(worst, "worst-load/cap")
		b.ReportMetric(share*100, "new-host-first-second-%")
	}
}
