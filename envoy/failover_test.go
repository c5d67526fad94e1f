package envoy_test

import (
	"sync"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/envoy/harness"
)

// TestCrash: 100 sessions send requests continuously for 10 s through Envoy
// to 3 backends; one backend process is killed (SIGKILL) after 3 s. No client
// request fails: Envoy's retry takes each of the killed host's requests to the
// successor the service listed second, and no session of another host moves.
func TestCrash(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"verified", "opaque"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, mode)
			sessions := startSessions(t, s, 100)
			successor := map[*session]string{}
			for _, ss := range sessions {
				successor[ss] = successorOf(s, harness.TokenClaim(ss.c.Cookie("affinity"), "sid"), ss.host)
			}
			const victim = "backend-2"
			var (
				mu                           sync.Mutex
				requests, failed, othersMove int
				victimOK, victimElsewhere    int
				killedAt                     time.Time
			)
			stop := time.Now().Add(10 * time.Second)
			var wg sync.WaitGroup
			for w := range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(stop) {
						for _, ss := range sessions[w*10 : w*10+10] {
							r, _, err := ss.c.Get("/")
							mu.Lock()
							requests++
							after := !killedAt.IsZero()
							switch {
							case err != nil:
								failed++
								t.Errorf("request of a %s session: %v", ss.host, err)
							case ss.host != victim && r.Host != ss.host:
								othersMove++
							case ss.host == victim && after && r.Host == successor[ss]:
								victimOK++
							case ss.host == victim && after && r.Host != victim:
								victimElsewhere++
							}
							mu.Unlock()
						}
					}
				}()
			}
			time.Sleep(3 * time.Second) // the load runs meanwhile; the kill comes mid-run
			mu.Lock()
			killedAt = time.Now()
			mu.Unlock()
			s.Backends[1].Proc.Kill()
			wg.Wait()
			onVictim := 0
			for _, ss := range sessions {
				if ss.host == victim {
					onVictim++
				}
			}
			t.Logf("%s, crash: %d requests, %d failed; %d sessions on the killed host, their requests after the kill served by their successor %d times (elsewhere %d); %d requests of other sessions moved",
				mode, requests, failed, onVictim, victimOK, victimElsewhere, othersMove)
			if failed != 0 || othersMove != 0 || victimElsewhere != 0 || onVictim == 0 || victimOK == 0 {
				t.Fatalf("failed %d, other sessions moved %d, served off their successor %d", failed, othersMove, victimElsewhere)
			}
		})
	}
}

// TestServedElsewhereRebinds: backend-2 is down but still listed. A new
// session placed on it is served by its successor after Envoy's retry, and
// the same response binds its cookie to that successor, so its next requests
// need no retry.
func TestServedElsewhereRebinds(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"opaque", "verified"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, mode)
			s.Backends[1].Proc.Kill()
			rebound := 0
			for i := range 30 {
				c := harness.NewClient(s.URL(""))
				before, _ := s.EnvoyStat("cluster.app.upstream_rq_retry")
				r, _, err := c.Get("/")
				if err != nil {
					t.Fatalf("new session %d: %v", i, err)
				}
				if got := s.CookieHost(c.Cookie("affinity")); got != r.Host {
					t.Fatalf("new session %d served by %s, its cookie names %s", i, r.Host, got)
				}
				retries, _ := s.EnvoyStat("cluster.app.upstream_rq_retry")
				r2, _, err := c.Get("/")
				if err != nil || r2.Host != r.Host {
					t.Fatalf("second request of session %d: %v on %s", i, err, r2.Host)
				}
				if after, _ := s.EnvoyStat("cluster.app.upstream_rq_retry"); after != retries {
					t.Fatalf("session %d's second request was retried", i)
				}
				if retries > before {
					rebound++
				}
			}
			if rebound == 0 {
				t.Fatal("no new session was placed on the down host")
			}
			t.Logf("%s: 30 new sessions with backend-2 down, %d of their first requests retried on the successor and re-bound there; no second request retried", mode, rebound)
		})
	}
}
