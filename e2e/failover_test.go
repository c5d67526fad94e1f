package e2e_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
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
			sessions := spreadSessions(t, s, 100)
			successor := map[*session]string{}
			for _, ss := range sessions {
				successor[ss] = successorOf(s, launch.TokenClaim(ss.c.Cookie("affinity"), "sid"), ss.host)
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
			// New sessions until three were placed on the down host (a third
			// of them should be), within a bound.
			rebound, i := 0, 0
			for ; rebound < 3; i++ {
				if i == 300 {
					t.Fatalf("only %d of 300 new sessions were placed on the down host", rebound)
				}
				c := launch.NewClient(s.URL(""))
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
			t.Logf("%s: %d new sessions with backend-2 down, %d of their first requests retried on the successor and re-bound there; no second request retried", mode, i, rebound)
		})
	}
}

// TestRecovery (opaque, hosts from the config file, the service's own
// active health check): backend-2 dies; the check takes it out and its
// sessions move to their successors; it comes back: the moved sessions stay
// where they are, and new sessions reach it again.
func TestRecovery(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "opaque", PoolYAML: "    health:\n      active: {interval: 200ms, timeout: 150ms}\n      passive: {}\n"})
	sessions := spreadSessions(t, s, 45)
	s.Backends[1].Proc.Kill()
	moved := map[*session]string{}
	err := launch.Eventually(context.Background(), 10*time.Second, func() error {
		for _, ss := range sessions {
			if ss.host != "backend-2" {
				continue
			}
			r, _, err := ss.c.Get("/")
			if err != nil {
				return err
			}
			if s.CookieHost(ss.c.Cookie("affinity")) == "backend-2" {
				return fmt.Errorf("a session of backend-2 still has its cookie (served by %s)", r.Host)
			}
			moved[ss] = r.Host
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartBackend(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	reached := false
	err = launch.Eventually(context.Background(), 10*time.Second, func() error {
		r, _, err := launch.NewClient(s.URL("")).Get("/")
		if err != nil {
			return err
		}
		if reached = r.Host == "backend-2"; !reached {
			return fmt.Errorf("no new session on the recovered backend-2 yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	back := 0
	for ss, host := range moved {
		r, _, err := ss.c.Get("/")
		if err != nil {
			t.Fatal(err)
		}
		if r.Host != host {
			back++
		}
	}
	t.Logf("recovery: %d sessions of backend-2 moved while it was down; after it came back %d of them moved again; new sessions reach it", len(moved), back)
	if back != 0 || len(moved) == 0 {
		t.Fatalf("%d of %d moved sessions moved again", back, len(moved))
	}
}
