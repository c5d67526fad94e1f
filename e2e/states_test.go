package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// TestDrain (verified mode): a draining host keeps its sessions until its
// deadline and takes no new ones; after the deadline its sessions move, each
// within the bound the README states (refresh interval + Envoy's 5 s skew;
// tokens refreshed while draining expire at the deadline itself). The drain
// comes from the config file, or from the admin API at run time.
func TestDrain(t *testing.T) {
	t.Parallel()
	drains := map[string]func(s *launch.Stack, deadline time.Time) error{
		"config": func(s *launch.Stack, deadline time.Time) error { return s.Drain(1, deadline) },
		"admin-api": func(s *launch.Stack, deadline time.Time) error {
			url := s.ServerURL("/pools/default/hosts/backend-2/drain?deadline=" + deadline.UTC().Format(time.RFC3339Nano))
			resp, err := http.Post(url, "", nil)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("drain: %s: %s", resp.Status, body)
			}
			return nil
		},
	}
	for name, drain := range drains {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testDrain(t, drain)
		})
	}
}

func testDrain(t *testing.T, drain func(*launch.Stack, time.Time) error) {
	s := newStackWith(t, launch.Options{Mode: "verified", RefreshInterval: 2 * time.Second})
	sessions := spreadSessions(t, s, 45)
	var onDrained []*session
	for _, ss := range sessions {
		if ss.host == "backend-2" {
			onDrained = append(onDrained, ss)
		}
	}
	if len(onDrained) == 0 {
		t.Fatal("no session on backend-2")
	}
	deadline := time.Now().Add(4 * time.Second)
	if err := drain(s, deadline); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitPoolHosts(context.Background(), "backend-1", "backend-2(draining)", "backend-3"); err != nil {
		t.Fatal(err)
	}
	// No new session on the draining host.
	for i := range 30 {
		r, _, err := launch.NewClient(s.URL("")).Get("/")
		if err != nil {
			t.Fatal(err)
		}
		if r.Host == "backend-2" {
			t.Fatalf("new session %d placed on the draining host", i)
		}
	}
	// Until the deadline every session stays where it is. Each request is
	// sent at least 300 ms before it, however long a pass takes.
	for before := true; before; {
		for _, ss := range sessions {
			if before = time.Until(deadline) > 300*time.Millisecond; !before {
				break
			}
			r, _, err := ss.c.Get("/")
			if err != nil {
				t.Fatal(err)
			}
			if r.Host != ss.host {
				t.Fatalf("session of %s served by %s before the deadline", ss.host, r.Host)
			}
		}
	}
	// After it, the drained host's sessions move; nobody else does.
	moved := map[*session]time.Duration{}
	limit := deadline.Add(2*time.Second + 5*time.Second + time.Second)
	for len(moved) < len(onDrained) && time.Now().Before(limit) {
		for _, ss := range sessions {
			r, _, err := ss.c.Get("/")
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case ss.host != "backend-2" && r.Host != ss.host:
				t.Fatalf("session of %s moved to %s", ss.host, r.Host)
			case ss.host == "backend-2" && r.Host != "backend-2":
				if _, ok := moved[ss]; !ok {
					moved[ss] = time.Since(deadline)
				}
			}
		}
	}
	var last time.Duration
	for _, d := range moved {
		last = max(last, d)
	}
	t.Logf("drain: %d of %d sessions of the drained host moved, the last %v after the deadline (bound: refresh 2 s + 5 s skew); %d other sessions stayed",
		len(moved), len(onDrained), last.Round(10*time.Millisecond), len(sessions)-len(onDrained))
	if len(moved) != len(onDrained) {
		t.Fatalf("%d sessions still on the drained host %v after its deadline", len(onDrained)-len(moved), time.Since(deadline))
	}
}

// TestStrict (opaque mode): a session whose host is gone gets a 503 with a
// clear body and a cleared cookie; the next request is a new session.
func TestStrict(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "opaque", Strict: true})
	sessions := spreadSessions(t, s, 30)
	if err := s.WriteConfig(0, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitPoolHosts(context.Background(), "backend-1", "backend-3"); err != nil {
		t.Fatal(err)
	}
	rejected := 0
	for _, ss := range sessions {
		r, resp, err := ss.c.Get("/")
		if ss.host != "backend-2" {
			if err != nil || r.Host != ss.host {
				t.Fatalf("session of %s: %v, served by %s", ss.host, err, r.Host)
			}
			continue
		}
		if resp == nil || resp.StatusCode != 503 {
			t.Fatalf("session of the removed host: %v", err)
		}
		if !strings.Contains(err.Error(), "the server holding this session is gone") {
			t.Fatalf("503 body: %v", err)
		}
		if ss.c.Cookie("affinity") != "" {
			t.Fatal("the 503 did not clear the session cookie")
		}
		rejected++
		// The next request starts a new session.
		r, _, err = ss.c.Get("/")
		if err != nil || r.Host == "backend-2" || s.CookieHost(ss.c.Cookie("affinity")) != r.Host {
			t.Fatalf("after the 503: %v, served by %s", err, r.Host)
		}
	}
	t.Logf("strict: %d sessions of the removed host answered 503 once, then started anew; %d others unaffected", rejected, len(sessions)-rejected)
	if rejected == 0 {
		t.Fatal("no session on the removed host")
	}
}

// TestBoundedLoads (verified mode): with a cap of 1.0 over 3 hosts, 30 new
// sessions land 10/10/10, whatever their first choices.
func TestBoundedLoads(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "verified", LoadFactor: 1.0})
	count := map[string]int{}
	for _, ss := range startSessions(t, s, 30) {
		count[ss.host]++
	}
	t.Logf("bounded loads, c = 1.0: 30 new sessions landed %v", count)
	if count["backend-1"] != 10 || count["backend-2"] != 10 || count["backend-3"] != 10 {
		t.Fatalf("30 new sessions: %v, want 10/10/10", count)
	}
}

// TestExplainMatchesTraffic: for sessions established through Envoy, the
// admin API's explain names the host that served them, and after that host
// leaves the pool it names the host that then serves them.
func TestExplainMatchesTraffic(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"opaque", "verified"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, mode)
			sessions := spreadSessions(t, s, 15)
			explain := func(ss *session) (host, outcome string) {
				t.Helper()
				resp, err := http.Get(s.ServerURL("/debug/explain?cookie=" + url.QueryEscape(ss.c.Cookie("affinity"))))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var x struct{ Host, Outcome string }
				if err := json.NewDecoder(resp.Body).Decode(&x); err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("explain: %s %v", resp.Status, err)
				}
				return x.Host, x.Outcome
			}
			for _, ss := range sessions {
				if host, outcome := explain(ss); host != ss.host || outcome != "pinned" {
					t.Fatalf("explain says %s %s, the session is served by %s", outcome, host, ss.host)
				}
			}
			if err := s.SetHosts(context.Background(), 0, 2); err != nil {
				t.Fatal(err)
			}
			rebound := 0
			for _, ss := range sessions {
				host, outcome := explain(ss)
				if ss.host == "backend-2" {
					if outcome != "rebound" {
						t.Fatalf("explain of a backend-2 session after it left: %s %s", outcome, host)
					}
					rebound++
				}
				r, _, err := ss.c.Get("/")
				if err != nil {
					t.Fatal(err)
				}
				if r.Host != host {
					t.Fatalf("explain named %s, the next request reached %s", host, r.Host)
				}
			}
			t.Logf("%s: explain named the serving host of 15 sessions before and after backend-2 left (%d re-bound)", mode, rebound)
			if rebound == 0 {
				t.Fatal("no session was on backend-2")
			}
		})
	}
}
