package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity/discovery"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// TestLoadSignalTwoEnvoys (verified mode): two Envoys in front of one
// pool. A session holds requests in flight on its host through Envoy A;
// Envoy B, through which new sessions arrive, counts none of them, but the
// service sums what both count, so the new sessions avoid that host. Every
// session stays where it landed.
func TestLoadSignalTwoEnvoys(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "verified", Envoys: 2, Load: &launch.Load{Interval: 100 * time.Millisecond}})
	a := s.Gateways[0] // Envoy A; the stack's own Envoy is B
	hot := openSession(t, s, a.URL(""))

	const held = 12
	holdRequests(t, a.URL("/?hold=10s"), held, "Cookie", "affinity="+hot.c.Cookie("affinity"))
	hotAddr := ""
	for _, b := range s.Backends {
		if b.Name == hot.host {
			hotAddr = b.Address()
		}
	}
	// inFlight is what one Envoy counts on the hot host.
	inFlight := func(adminPort int) (float64, error) {
		m, err := discovery.RequestsInFlight(t.Context(), http.DefaultClient, discovery.AdminURL("127.0.0.1:"+strconv.Itoa(adminPort)), "app")
		return m[hotAddr], err
	}
	if err := launch.Eventually(context.Background(), 10*time.Second, func() error {
		onA, err := inFlight(a.AdminPort)
		if err != nil || onA < held {
			return fmt.Errorf("Envoy A counts %v requests in flight on %s (%v), want %d", onA, hot.host, err, held)
		}
		if l, err := serviceLoad(s, hot.host); err != nil || l < held {
			return fmt.Errorf("the service reads %v requests in flight on %s (%v), want %d", l, hot.host, err, held)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if onB, err := inFlight(s.AdminPort); err != nil || onB != 0 {
		t.Fatalf("Envoy B counts %v requests in flight on %s (%v), want 0: the held requests went through A only", onB, hot.host, err)
	}

	sessions := make([]*session, 30)
	count := map[string]int{}
	for i := range sessions {
		sessions[i] = openSession(t, s, s.URL(""))
		count[sessions[i].host]++
	}
	if l, err := serviceLoad(s, hot.host); err != nil || l < held {
		t.Fatalf("the held requests ended before the sessions were placed: %v (%v)", l, err)
	}
	t.Logf("%d requests in flight on %s through Envoy A: 30 new sessions through Envoy B landed %v", held, hot.host, count)
	if count[hot.host] != 0 {
		t.Fatalf("the hot host %s took %d new sessions through Envoy B: %v", hot.host, count[hot.host], count)
	}
	for _, ss := range append(sessions, hot) {
		r, _, err := ss.c.Get("/")
		if err != nil || r.Host != ss.host {
			t.Fatalf("a session of %s went to %s (%v)", ss.host, r.Host, err)
		}
	}
}

// openSession opens one session through the Envoy listening at base and
// checks that the backend that answered is the one its cookie names.
func openSession(t *testing.T, s *launch.Stack, base string) *session {
	t.Helper()
	c := launch.NewClient(base)
	t.Cleanup(c.Close)
	r, _, err := c.Get("/")
	if err != nil {
		t.Fatalf("opening a session through %s: %v", base, err)
	}
	if h := s.CookieHost(c.Cookie("affinity")); h != r.Host {
		t.Fatalf("served by %s, cookie names %q", r.Host, h)
	}
	return &session{c: c, host: r.Host}
}
