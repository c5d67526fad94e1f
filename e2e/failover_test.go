package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// activeHealth is the service's own health check, fast enough for a test.
var activeHealth = &launch.Health{ActiveInterval: 200 * time.Millisecond, ActiveTimeout: 150 * time.Millisecond}

// TestCrash: sessions send requests continuously through Envoy to 3
// backends; backend-2's process is killed (SIGKILL) and restarted at the
// same address 2 s later, its memory gone, as after a container restart. No
// request fails: Envoy's retry takes each of backend-2's requests to the
// successor (in verified and opaque mode the one the service listed second;
// in native mode, Envoy's own stateful_session cookie, the one Envoy's load
// balancer picks). Each of backend-2's sessions is then served by exactly
// one other host, also after backend-2 is back: the failed-over response
// re-bound it there (Envoy's own cookie does the same). No other session
// moves. With failback, backend-2's sessions return to it once it is back.
func TestCrash(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, mode string
		health     *launch.Health
		failback   bool
		// keys: the sessions' key source ("": the session cookie).
		keys string
	}{
		{name: "verified", mode: "verified"},
		{name: "verified/active-health", mode: "verified", health: activeHealth},
		{name: "opaque", mode: "opaque"},
		{name: "opaque/active-health", mode: "opaque", health: activeHealth},
		{name: "native", mode: "native"},
		{name: "verified/failback", mode: "verified", failback: true},
		{name: "opaque/failback", mode: "opaque", failback: true},
		{name: "opaque/header", mode: "opaque", keys: "header"},
		{name: "opaque/query", mode: "opaque", keys: "query"},
		{name: "opaque/app_cookie", mode: "opaque", keys: "app_cookie"},
		{name: "opaque/client_address", mode: "opaque", keys: "client_address"},
		{name: "opaque/upstream_header", mode: "opaque", keys: "upstream_header"},
		{name: "opaque/header/failback", mode: "opaque", keys: "header", failback: true},
		{name: "opaque/header/passive-health", mode: "opaque", keys: "header", health: &launch.Health{Passive: true}},
		{name: "verified/header", mode: "verified", keys: "header"},
		{name: "verified/app_cookie", mode: "verified", keys: "app_cookie"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := launch.Options{Mode: tt.mode, Health: tt.health, Failback: tt.failback, KeySources: keySources[tt.keys]}
			if tt.keys == "upstream_header" {
				opts.BackendArgs = []string{"-session-header", "X-Session-Id"}
			}
			s := newStackWith(t, opts)
			const victim = "backend-2"
			var sessions []*session
			if tt.keys == "" {
				sessions = startSessionsOn(t, s, 30, 6, victim)
			} else {
				sessions = openSessionsOn(t, 30, 6, openKeyed(s, tt.keys), victim)
			}
			successor := map[*session]string{}
			if tt.mode != "native" && tt.keys == "" {
				for _, ss := range sessions {
					successor[ss] = successorOf(s, launch.TokenClaim(ss.c.Cookie("affinity"), "sid"), ss.host)
				}
			}
			var (
				load             phasedLoad
				requests, failed int
				othersMoved      int
				servedBy         = map[*session]map[string]int{} // after the kill, by host
				backOnVictim     int                             // after the restart
				victimSessions   int
				offSuccessor     int
			)
			streamsBefore, failoverBefore, retriesBefore := envoyStats(t, s)
			load.run(t, sessions, 3, func(ss *session, at string, r launch.Reply, err error) {
				requests++
				switch {
				case err != nil:
					failed++
					t.Errorf("%s: request of a %s session: %v", at, ss.host, err)
				case ss.host != victim && r.Host != ss.host:
					othersMoved++
				case ss.host == victim && at != "before":
					if servedBy[ss] == nil {
						servedBy[ss] = map[string]int{}
					}
					servedBy[ss][r.Host]++
					if at == "restarted" && r.Host == victim {
						backOnVictim++
					}
					if successor[ss] != "" && r.Host != victim && r.Host != successor[ss] {
						offSuccessor++
					}
				}
			}, nil)
			time.Sleep(time.Second) // the load runs meanwhile
			load.set("killed")
			s.Backends[1].Proc.Kill()
			killed := time.Now()
			if tt.health != nil && tt.health.Passive {
				// The failed-over responses hold the victim down.
				if err := launch.Eventually(context.Background(), 2*time.Second, func() error {
					if states, err := poolStatesAt(s.ServerURL("/debug/pools")); err != nil || states[victim] != "down" {
						return fmt.Errorf("%s is %q (%v), want down", victim, states[victim], err)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(2*time.Second - time.Since(killed))
			if err := s.StartBackend(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
			load.set("restarted")
			// Back in Envoy's cluster (its health check passes again) with
			// the load still running.
			probes := 0
			if err := launch.Eventually(context.Background(), 10*time.Second, func() error {
				probes++
				c := launch.NewClient(s.URL(""))
				if tt.keys == "client_address" {
					// Every request has a key: a new one each time.
					c = launch.NewClientFrom(s.URL(""), fmt.Sprintf("127.0.9.%d", 1+probes%250))
				}
				r, _, err := c.Get("/")
				if err != nil || r.Host != victim {
					return fmt.Errorf("no new session on the restarted %s yet", victim)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			load.stop()
			rebinds := servedElsewhere(t, s)
			streamsAfter, failoverAfter, retriesAfter := envoyStats(t, s)
			streams, failoverStreams, retries := streamsAfter-streamsBefore, failoverAfter-failoverBefore, retriesAfter-retriesBefore

			// Where each of backend-2's sessions is now.
			victimSessions, stayed, returned := victimsNow(t, sessions, victim, servedBy)
			t.Logf("%s, crash and restart: %d requests, %d failed, %d of other sessions moved; of %d sessions on %s, %d stayed on the one host that served them after the kill, %d returned to %s (%d requests there after the restart, %d off the computed successor); %d sessions re-bound where they were served",
				tt.name, requests, failed, othersMoved, victimSessions, victim, stayed, returned, victim, backOnVictim, offSuccessor, rebinds)
			t.Logf("%s: %d ext_proc streams of the deciding filter, %d of the failover filter, %d retries by Envoy", tt.name, streams, failoverStreams, retries)
			if tt.keys != "" && !tt.failback {
				// Keyed requests cost one stream each, and a failover one
				// more stream and one retry per session: its next request
				// goes straight to the host that served it.
				switch {
				case streams != requests+probes:
					t.Errorf("%d streams of the deciding filter for %d keyed requests and %d probes, want one each", streams, requests, probes)
				case failoverStreams > 2*victimSessions || retries > 2*victimSessions:
					t.Errorf("%d failover streams and %d retries for %d failed-over sessions, want about one each", failoverStreams, retries, victimSessions)
				}
			}
			switch {
			case failed != 0 || othersMoved != 0 || offSuccessor != 0:
				t.Fatalf("%d failed, %d requests of other sessions moved, %d off the successor", failed, othersMoved, offSuccessor)
			case tt.failback && returned != victimSessions:
				t.Fatalf("failback: %d of %d sessions returned to %s", returned, victimSessions, victim)
			case !tt.failback && (stayed != victimSessions || backOnVictim != 0):
				t.Fatalf("%d of %d sessions stayed where they failed over; %d requests went back to %s", stayed, victimSessions, backOnVictim, victim)
			case tt.health != nil && tt.health.Passive && (rebinds == 0 || rebinds > victimSessions):
				// Held down after its first failed-over responses, the
				// victim's other sessions are moved by their next decision.
				t.Fatalf("%d re-binds for %d failed-over sessions, want from 1 to one each", rebinds, victimSessions)
			case tt.mode != "native" && !tt.failback && (tt.health == nil || !tt.health.Passive) && rebinds != victimSessions:
				// One request at a time per session: its first failed-over
				// response re-binds it, and its next request goes there.
				t.Fatalf("%d re-binds for %d failed-over sessions, want one each", rebinds, victimSessions)
			}
		})
	}
}

// victimsNow sends one more request of each session that was on victim
// and tallies where it goes: stayed, on the one host that served it since
// the kill (servedBy); returned, on victim again. A session that is
// anywhere else is an error.
func victimsNow(t *testing.T, sessions []*session, victim string, servedBy map[*session]map[string]int) (victims, stayed, returned int) {
	t.Helper()
	for _, ss := range sessions {
		if ss.host != victim {
			continue
		}
		victims++
		r, _, err := ss.get()
		if err != nil {
			t.Fatal(err)
		}
		switch hosts := servedBy[ss]; {
		case r.Host == victim:
			returned++
		case len(hosts) == 1 && hosts[r.Host] > 0:
			stayed++
		default:
			t.Errorf("a session of %s served by %v after the kill, now by %s", victim, hosts, r.Host)
		}
	}
	return victims, stayed, returned
}

// envoyStats reads Envoy's ext_proc streams, of the deciding filter and of
// the failover filter, and its retries to cluster app.
func envoyStats(t *testing.T, s *launch.Stack) (streams, failover, retries int) {
	t.Helper()
	var err error
	for _, st := range []struct {
		name string
		n    *int
	}{
		{"http.ingress.ext_proc.streams_started", &streams},
		{"http.ingress.ext_proc.failover.streams_started", &failover},
		{"cluster.app.upstream_rq_retry", &retries},
	} {
		if *st.n, err = s.EnvoyStat(st.name); err != nil {
			t.Fatal(err)
		}
	}
	return streams, failover, retries
}

// keySources are the pools' key sources of the keyed sessions that
// openKeyed opens, by kind.
var keySources = map[string][]launch.KeySource{
	"header":     {{Type: "header", Name: "x-session-id"}},
	"query":      {{Type: "query", Name: "sid"}},
	"app_cookie": {{Type: "app_cookie", Name: "app_session"}},
	// Each session from a loopback address of its own; the backends start
	// the session header (-session-header), learned from their answers.
	"client_address":  {{Type: "client_address"}},
	"upstream_header": {{Type: "upstream_header", Name: "X-Session-Id"}},
}

// openKeyed opens session i of a pool keyed by kind (keySources): by
// its own header or query value or address, or by the application cookie
// or session header the host that served its first request set.
func openKeyed(s *launch.Stack, kind string) func(i int) (*session, error) {
	return func(i int) (*session, error) {
		ss := &session{c: launch.NewClient(s.URL(""))}
		key := fmt.Sprintf("user-%d", i)
		switch kind {
		case "header":
			ss.headers = []string{"x-session-id", key}
		case "query":
			ss.path = "/?sid=" + key
		case "client_address":
			ss.c = launch.NewClientFrom(s.URL(""), fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250))
		}
		r, resp, err := ss.get()
		if err != nil {
			return nil, err
		}
		switch {
		case kind == "app_cookie" && ss.c.Cookie("app_session") == "":
			return nil, fmt.Errorf("%s set no app_session cookie", r.Host)
		case kind == "upstream_header":
			if ss.headers = []string{"X-Session-Id", resp.Header.Get("X-Session-Id")}; ss.headers[1] == "" {
				return nil, fmt.Errorf("%s set no session header", r.Host)
			}
		}
		ss.host = r.Host
		return ss, nil
	}
}

// servedElsewhere is how many sessions the service re-bound to the host
// that really served them (its decisions metric, reason served-elsewhere).
func servedElsewhere(t *testing.T, s *launch.Stack) int {
	t.Helper()
	resp, err := http.Get(s.ServerURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "envoy_affinity_decisions_total{") && strings.Contains(line, `reason="served-elsewhere"`) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			n += int(v)
		}
	}
	return n
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
	s := newStackWith(t, launch.Options{Mode: "opaque", Health: &launch.Health{ActiveInterval: 200 * time.Millisecond, ActiveTimeout: 150 * time.Millisecond, Passive: true}})
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
