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

// keyedSession is one client of a pool with a given key source: the host
// its first request was placed on, and the headers its later requests
// carry (besides its cookie jar) and held requests carry (without it).
type keyedSession struct {
	c           *launch.Client
	host        string
	later, hold []string
}

// loadCase is a pool keyed one way, and how its client opens session i.
type loadCase struct {
	name string
	opts launch.Options
	open func(c *launch.Client, i int) (keyedSession, error)
}

// byCookie opens a session by its first request and keeps the named
// cookie (the session cookie, or a learned application cookie).
func byCookie(name string) func(*launch.Client, int) (keyedSession, error) {
	return func(c *launch.Client, _ int) (keyedSession, error) {
		r, _, err := c.Get("/")
		if err != nil {
			return keyedSession{}, err
		}
		v := c.Cookie(name)
		if v == "" {
			return keyedSession{}, fmt.Errorf("no %s cookie after the first answer", name)
		}
		return keyedSession{c: c, host: r.Host, hold: []string{"Cookie", name + "=" + v}}, nil
	}
}

// TestLoadSignal: one session keeps requests in flight on its host, which
// Envoy counts (rq_active) and the service reads from Envoy's admin API;
// new sessions then avoid that host, the hot session keeps its host, and
// every session stays where it landed. For every way a pool keys its
// sessions: the session cookie in each mode, a request header, a learned
// application cookie and a session header the upstream starts (envelope).
func TestLoadSignal(t *testing.T) {
	t.Parallel()
	load := &launch.Load{Interval: 100 * time.Millisecond}
	cases := []loadCase{
		{name: "cookie/verified", opts: launch.Options{Mode: "verified"}, open: byCookie("affinity")},
		{name: "cookie/opaque", opts: launch.Options{Mode: "opaque"}, open: byCookie("affinity")},
		{name: "cookie/native", opts: launch.Options{Mode: "native"}, open: byCookie("affinity")},
		{name: "header/verified", opts: launch.Options{Mode: "verified", KeySources: []launch.KeySource{{Type: "header", Name: "x-session-id"}}},
			open: func(c *launch.Client, i int) (keyedSession, error) {
				key := []string{"x-session-id", fmt.Sprintf("device-%d", i)}
				r, _, err := c.Get("/", key...)
				return keyedSession{c: c, host: r.Host, later: key, hold: key}, err
			}},
		{name: "app_cookie/verified", opts: launch.Options{Mode: "verified", KeySources: []launch.KeySource{{Type: "app_cookie", Name: "app_session"}}},
			open: byCookie("app_session")},
		{name: "envelope/opaque", opts: launch.Options{Mode: "opaque", BackendArgs: []string{"-session-header", "X-Session-Id"},
			KeySources: []launch.KeySource{{Type: "upstream_header", Name: "X-Session-Id", Envelope: "signed"}}},
			open: func(c *launch.Client, _ int) (keyedSession, error) {
				r, resp, err := c.Get("/")
				if err != nil {
					return keyedSession{}, err
				}
				env := []string{"X-Session-Id", resp.Header.Get("X-Session-Id")}
				if env[1] == "" {
					return keyedSession{}, fmt.Errorf("no session header in the first answer")
				}
				return keyedSession{c: c, host: r.Host, later: env, hold: env}, nil
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts
			opts.Load = load
			s := newStackWith(t, opts)
			if opts.Mode == "verified" {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := s.WaitJWKS(ctx); err != nil {
					t.Fatal(err)
				}
			}
			open := func(i int) keyedSession {
				t.Helper()
				ks, err := tc.open(launch.NewClient(s.URL("")), i)
				if err != nil {
					t.Fatalf("session %d: %v", i, err)
				}
				return ks
			}
			hot := open(0)

			// Requests held on the hot session's host until the test is done.
			const held = 12
			holdRequests(t, s.URL("/?hold=10s"), held, hot.hold...)
			hotLoad := func() (float64, error) { return serviceLoad(s, hot.host) }
			if err := launch.Eventually(context.Background(), 10*time.Second, func() error {
				if l, err := hotLoad(); err != nil || l < held {
					return fmt.Errorf("%s carries %v requests in flight (%v), want %d", hot.host, l, err, held)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}

			sessions := make([]keyedSession, 30)
			count := map[string]int{}
			for i := range sessions {
				sessions[i] = open(i + 1)
				count[sessions[i].host]++
			}
			// The holds were still running: the placements saw the hot host.
			if l, err := hotLoad(); err != nil || l < held {
				t.Fatalf("the held requests ended before the sessions were placed: %v (%v)", l, err)
			}
			t.Logf("%d requests in flight on %s: 30 new sessions landed %v", held, hot.host, count)
			if count[hot.host] != 0 {
				t.Fatalf("the hot host %s took %d new sessions: %v", hot.host, count[hot.host], count)
			}
			for i, ks := range append(sessions, hot) {
				for range 2 {
					r, _, err := ks.c.Get("/", ks.later...)
					if err != nil || r.Host != ks.host {
						t.Fatalf("session %d of %s went to %s (%v)", i, ks.host, r.Host, err)
					}
				}
			}
		})
	}
}

// serviceLoad is the requests in flight the service last read for the
// named host (the sum over every Envoy its load block names).
func serviceLoad(s *launch.Stack, host string) (float64, error) {
	return serviceLoadAt(s.ServerURL("/debug/pools"), host)
}

// serviceLoadAt is serviceLoad of the replica whose /debug/pools is url.
func serviceLoadAt(url, host string) (float64, error) {
	resp, err := http.Get(url)
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

// holdRequests keeps n requests carrying headers ("k", "v", ...: a session
// cookie or key) open through url (the demo backend's ?hold=) until the
// test ends, so that Envoy counts them in flight on the session's host.
func holdRequests(t *testing.T, url string, n int, headers ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			for i := 0; i+1 < len(headers); i += 2 {
				req.Header.Add(headers[i], headers[i+1])
			}
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
}
