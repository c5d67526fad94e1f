package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// TestLoadSignal (verified mode): one session keeps requests in flight on
// its host, which Envoy counts (rq_active) and the service reads from
// Envoy's admin API; new sessions then avoid that host, the hot session
// keeps its host, and every session stays where it landed.
func TestLoadSignal(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "verified", Load: &launch.Load{Interval: 100 * time.Millisecond}})
	hot := startSessions(t, s, 1)[0]

	// Requests held on the hot session's host until the test is done
	// (Envoy routes them by the token, without asking the service).
	const held = 12
	holdRequests(t, s.URL("/?hold=10s"), "affinity="+hot.c.Cookie("affinity"), held)
	hotLoad := func() (float64, error) { return serviceLoad(s, hot.host) }
	if err := launch.Eventually(context.Background(), 10*time.Second, func() error {
		if l, err := hotLoad(); err != nil || l < held {
			return fmt.Errorf("%s carries %v requests in flight (%v), want %d", hot.host, l, err, held)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	sessions := startSessions(t, s, 30)
	count := map[string]int{}
	for _, ss := range sessions {
		count[ss.host]++
	}
	// The holds were still running: the placements saw the hot host.
	if l, err := hotLoad(); err != nil || l < held {
		t.Fatalf("the held requests ended before the sessions were placed: %v (%v)", l, err)
	}
	t.Logf("%d requests in flight on %s: 30 new sessions landed %v", held, hot.host, count)
	if count[hot.host] != 0 {
		t.Fatalf("the hot host %s took %d new sessions: %v", hot.host, count[hot.host], count)
	}
	for _, ss := range append(sessions, hot) {
		r, _, err := ss.c.Get("/")
		if err != nil || r.Host != ss.host {
			t.Fatalf("a session of %s went to %s (%v)", ss.host, r.Host, err)
		}
	}
}

// serviceLoad is the requests in flight the service last read for the
// named host (the sum over every Envoy its load block names).
func serviceLoad(s *launch.Stack, host string) (float64, error) {
	resp, err := http.Get(s.ServerURL("/debug/pools"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Pools []struct {
			Hosts []struct {
				ID   string   `json:"id"`
				Load *float64 `json:"load"`
			} `json:"hosts"`
		} `json:"pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, err
	}
	for _, h := range out.Pools[0].Hosts {
		if h.ID == host && h.Load != nil {
			return *h.Load, nil
		}
	}
	return 0, fmt.Errorf("no load for %s", host)
}

// holdRequests keeps n requests of the session cookie names open through
// url (the demo backend's ?hold=) until the test ends, so that Envoy counts
// them in flight on the session's host.
func holdRequests(t *testing.T, url, cookie string, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			req.Header.Set("Cookie", cookie)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
}
