package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// TestFleetKeyFailover (verified, header keys, three replicas sharing a
// Redis behind two Envoys): a backend is killed while the sessions send
// requests through both Envoys, so through every replica. Each of its
// sessions is re-bound once, by whichever replica saw the failed-over
// response, and every replica then sends it to the host that served it,
// also after the backend is back at the same address; no other session
// moves and no request fails.
func TestFleetKeyFailover(t *testing.T) {
	t.Parallel()
	f := newHeaderFleet(t, startRedis(t), nil)
	ctx := context.Background()
	const victim = "backend-2"
	for i := 0; len(f.sessions) < 30; i++ {
		if i == 300 {
			t.Fatalf("30 sessions not opened in 300 tries")
		}
		f.openHeader(t, fmt.Sprintf("user-%d", i), i)
	}
	// rounds sends each session's request rounds times, alternating the
	// Envoys, and calls see with where it was answered.
	failed := 0
	rounds := func(n int, see func(ss *fleetSession, host string)) {
		for round := range n {
			for i, ss := range f.sessions {
				r, err := plainGet(f.client, f.gateways[(i+round)%2], ss.headers...)
				if err != nil {
					failed++
					t.Errorf("a session of %s: %v", ss.host, err)
					continue
				}
				see(ss, r.Host)
			}
		}
	}
	othersMoved := 0
	other := func(ss *fleetSession, host string) bool {
		if ss.host != victim && host != ss.host {
			othersMoved++
		}
		return ss.host != victim
	}

	f.s.Backends[1].Proc.Kill()
	servedBy := map[*fleetSession]map[string]int{}
	rounds(6, func(ss *fleetSession, host string) {
		if !other(ss, host) {
			if servedBy[ss] == nil {
				servedBy[ss] = map[string]int{}
			}
			servedBy[ss][host]++
		}
	})
	if err := f.s.StartBackend(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Back in both Envoys' cluster: a new key reaches it through each.
	for g, gateway := range f.gateways {
		n := 0
		if err := launch.Eventually(ctx, 15*time.Second, func() error {
			n++
			r, err := plainGet(f.client, gateway, "x-session-id", fmt.Sprintf("probe-%d-%d", g, n))
			if err != nil || r.Host != victim {
				return fmt.Errorf("no new key on the restarted %s through Envoy %d yet (%v)", victim, g+1, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	back, victims, stayed := 0, 0, 0
	rounds(6, func(ss *fleetSession, host string) {
		if !other(ss, host) && host == victim {
			back++
		}
	})
	for _, ss := range f.sessions {
		if ss.host != victim {
			continue
		}
		victims++
		if hosts := servedBy[ss]; len(hosts) == 1 && hosts[victim] == 0 {
			stayed++
		} else {
			t.Errorf("a session of %s was served by %v after the kill", victim, hosts)
		}
	}
	rebinds := 0
	for i := range 3 {
		body, err := f.replicaGet(i, "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "envoy_affinity_decisions_total{") && strings.Contains(line, `reason="served-elsewhere"`) {
				var v float64
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				rebinds += int(v)
			}
		}
	}
	t.Logf("%d sessions on %s: %d stayed on the one host that served them after the kill, %d requests back on %s after its restart; %d re-binds over the replicas; %d requests of other sessions moved, %d failed",
		victims, victim, stayed, back, victim, rebinds, othersMoved, failed)
	switch {
	case victims == 0:
		t.Fatalf("no session on %s", victim)
	case failed != 0 || othersMoved != 0 || back != 0 || stayed != victims:
		t.Fatalf("%d failed, %d moved, %d back, %d of %d stayed", failed, othersMoved, back, stayed, victims)
	case rebinds != victims:
		t.Fatalf("%d re-binds for %d failed-over sessions, want one each", rebinds, victims)
	}
}
