package e2e_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// setHealth makes backend i's /healthz fail or recover.
func setHealth(t *testing.T, s *launch.Stack, i int, ok bool) {
	t.Helper()
	path := "/healthz/fail"
	if ok {
		path = "/healthz/ok"
	}
	resp, err := http.Post("http://"+s.Backends[i].Address()+path, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestEnvoyAdminSource (opaque mode): the pool's hosts come from Envoy's
// admin API. When Envoy's own active health check marks backend-2
// unhealthy, the service stops placing sessions there and moves its
// sessions to their successors, with no failed request; when it recovers,
// the moved sessions stay and new sessions reach it again.
func TestEnvoyAdminSource(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "opaque", EnvoySource: true})
	ctx := context.Background()
	if err := s.WaitPoolHosts(ctx, "backend-1", "backend-2", "backend-3"); err != nil {
		t.Fatal(err)
	}
	sessions := spreadSessions(t, s, 45)
	setHealth(t, s, 1, false)
	if err := s.WaitPoolHosts(ctx, "backend-1", "backend-3"); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		r, _, err := launch.NewClient(s.URL("")).Get("/")
		if err != nil || r.Host == "backend-2" {
			t.Fatalf("new session %d with backend-2 unhealthy: %v, on %s", i, err, r.Host)
		}
	}
	moved := map[*session]string{}
	for _, ss := range sessions {
		r, _, err := ss.c.Get("/")
		switch {
		case err != nil:
			t.Fatalf("session of %s: %v", ss.host, err)
		case ss.host == "backend-2":
			if want := successorOf(s, launch.TokenClaim(ss.c.Cookie("affinity"), "sid"), "backend-2"); r.Host != want {
				t.Fatalf("session of the unhealthy host served by %s, its successor is %s", r.Host, want)
			}
			moved[ss] = r.Host
		case r.Host != ss.host:
			t.Fatalf("session of %s moved to %s", ss.host, r.Host)
		}
	}
	if len(moved) == 0 {
		t.Fatal("no session was on backend-2")
	}
	// Recovery.
	setHealth(t, s, 1, true)
	if err := s.WaitPoolHosts(ctx, "backend-1", "backend-2", "backend-3"); err != nil {
		t.Fatal(err)
	}
	for ss, host := range moved {
		if r, _, err := ss.c.Get("/"); err != nil || r.Host != host {
			t.Fatalf("a moved session went from %s to %s after the recovery (%v)", host, r.Host, err)
		}
	}
	reached := 0
	for range 30 {
		r, _, err := launch.NewClient(s.URL("")).Get("/")
		if err != nil {
			t.Fatal(err)
		}
		if r.Host == "backend-2" {
			reached++
		}
	}
	t.Logf("envoy source: %d sessions of the unhealthy host moved to their successors and stayed after it recovered; %d of 30 new sessions reached it again", len(moved), reached)
	if reached == 0 {
		t.Fatal("no new session reached the recovered host")
	}
}
