package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/extproc"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// TestHeaderKey (verified mode): a client that sends x-session-id and no
// cookie is placed by the header's value and stays on its host, also after a
// host joins; the application is told the session's successor.
func TestHeaderKey(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "verified", KeySources: []launch.KeySource{{Type: "header", Name: "x-session-id"}, {Type: "cookie"}},
		UpstreamHeaders: launch.UpstreamHeaders{Rebound: "x-session-rebound", Successor: "x-session-successor"}})
	if err := s.SetHosts(context.Background(), 0, 1); err != nil {
		t.Fatal(err)
	}
	type user struct {
		key, host string
		c         *launch.Client
	}
	var users []user
	for i := range 20 {
		u := user{key: fmt.Sprintf("device-%d", i), c: launch.NewClient(s.URL(""))}
		r, resp, err := u.c.Get("/", "x-session-id", u.key, "x-session-successor", "forged")
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range resp.Header.Values("Set-Cookie") {
			if len(sc) > 9 && sc[:9] == "affinity=" {
				t.Fatalf("a header-keyed session got a session cookie")
			}
		}
		if r.Told["x-session-successor"] == "forged" || r.Told["x-session-successor"] == "" || r.Told["x-session-successor"] == r.Host {
			t.Fatalf("successor header %q for a session on %s", r.Told["x-session-successor"], r.Host)
		}
		u.host = r.Host
		users = append(users, u)
	}
	// A third host joins: no known key moves.
	if err := s.SetHosts(context.Background(), 0, 1, 2); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		for range 3 {
			r, _, err := u.c.Get("/", "x-session-id", u.key)
			if err != nil {
				t.Fatal(err)
			}
			if r.Host != u.host {
				t.Fatalf("key %s moved from %s to %s after a host joined", u.key, u.host, r.Host)
			}
		}
	}
	// New keys reach the new host too: keys are tried until one does (a
	// third of them should), within a bound.
	reached := false
	for i := 0; !reached; i++ {
		if i == 300 {
			t.Fatal("none of 300 new keys reached the host that joined")
		}
		r, _, err := launch.NewClient(s.URL("")).Get("/", "x-session-id", fmt.Sprintf("later-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		reached = r.Host == "backend-3"
	}
}

// TestLearnedAppCookie (verified mode): the service learns which host set
// the application's own session cookie (app_session) and routes a client
// that carries only that cookie to it.
func TestLearnedAppCookie(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "verified", KeySources: []launch.KeySource{{Type: "app_cookie", Name: "app_session"}, {Type: "cookie"}}})
	for i := range 12 {
		first := launch.NewClient(s.URL(""))
		r, _, err := first.Get("/")
		if err != nil {
			t.Fatal(err)
		}
		app := first.Cookie("app_session")
		if app == "" {
			t.Fatal("the backend set no app_session cookie")
		}
		// A client that kept only the application's cookie.
		c := launch.NewClient(s.URL(""))
		c.SetCookie("app_session", app)
		for n := 2; n <= 4; n++ {
			got, _, err := c.Get("/")
			if err != nil {
				t.Fatal(err)
			}
			if got.Host != r.Host || got.Count != n {
				t.Fatalf("session %d: app cookie set by %s, request %d served by %s (count %d)", i, r.Host, n, got.Host, got.Count)
			}
		}
	}
}

// TestUnknownPool: the service's only pool is named for another cluster, so
// requests to Envoy's cluster "app" pass through untouched (Envoy's own
// load balancer picks, no cookie is set) and are counted.
func TestUnknownPool(t *testing.T) {
	t.Parallel()
	s := newStackWith(t, launch.Options{Mode: "opaque", PoolName: "shop"})
	for i := range 10 {
		c := launch.NewClient(s.URL(""))
		if _, _, err := c.Get("/"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if c.Cookie("affinity") != "" {
			t.Fatal("a request of an unknown pool got a session cookie")
		}
	}
	resp, err := http.Get(s.ServerURL("/debug/pools"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pools struct {
		Unknown int `json:"unknown_pool_requests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&pools); err != nil {
		t.Fatal(err)
	}
	if pools.Unknown != 10 {
		t.Fatalf("unknown-pool requests counted %d, want 10", pools.Unknown)
	}
}

// TestPoolFromInitialMetadata: the ext_proc filter names the pool in its
// grpc_service initial_metadata (x-affinity-pool), so the Envoy YAML chooses
// the policy: the service's only pool is named "shop", not after the
// cluster, and still takes the requests.
func TestPoolFromInitialMetadata(t *testing.T) {
	t.Parallel()
	// Both ext_proc filters (the deciding one and affinity-failover) name it.
	data, err := os.ReadFile(envoyYAML("opaque.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	grpcService := regexp.MustCompile(`(?m)^( *)envoy_grpc: \{cluster_name: envoy_affinity\}\n`)
	if n := len(grpcService.FindAll(data, -1)); n != 2 {
		t.Fatalf("opaque.yaml has %d ext_proc gRPC services, want 2", n)
	}
	path := filepath.Join(t.TempDir(), "opaque-shop.yaml")
	shop := grpcService.ReplaceAll(data, []byte("${0}${1}initial_metadata: [{key: "+extproc.PoolMetadataKey+", value: shop}]\n"))
	if err := os.WriteFile(path, shop, 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStackWith(t, launch.Options{Mode: "opaque", PoolName: "shop", EnvoyYAML: path})
	for _, ss := range startSessions(t, s, 10) {
		if ss.c.Cookie("affinity") == "" {
			t.Fatal("no session cookie: the pool named in the metadata did not take the request")
		}
	}
}

// TestClientAddressBehindATrustedProxy: Envoy behind one trusted proxy
// (use_remote_address, xff_num_trusted_hops: 1) and the pool keyed by
// client_address with trusted_hops: 1 agree on who the client is: the
// address the trusted proxy put last in x-forwarded-for, not the proxy's
// own, nor one a client wrote before it.
func TestClientAddressBehindATrustedProxy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hcm, trusted := filepath.Join(dir, "hcm.yaml"), filepath.Join(dir, "opaque-xff.yaml")
	const prefix = "          stat_prefix: ingress\n"
	if err := launch.WriteVariant(envoyYAML("opaque.yaml"), hcm, prefix, prefix+"          use_remote_address: true\n          xff_num_trusted_hops: 1\n"); err != nil {
		t.Fatal(err)
	}
	// Envoy says whom it took for the client.
	const headers = "                response_headers_to_add:\n"
	if err := launch.WriteVariant(hcm, trusted, headers, headers+"                - header: {key: x-envoy-client, value: \"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\"}\n"); err != nil {
		t.Fatal(err)
	}
	s := newStackWith(t, launch.Options{Mode: "opaque", EnvoyYAML: trusted, KeySources: []launch.KeySource{{Type: "client_address", TrustedHops: 1}}})
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 12 {
		ip := fmt.Sprintf("198.51.100.%d", i+1)
		xff := ip // what the trusted proxy sends: the client it saw
		if i%2 == 1 {
			xff = "203.0.113.66, " + ip // with a client's own entry before it
		}
		req, err := http.NewRequest(http.MethodGet, s.URL("/"), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var r launch.Reply
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Header.Get("x-envoy-client"); got != ip {
			t.Fatalf("Envoy took %q for the client of x-forwarded-for %q, want %s", got, xff, ip)
		}
		var x struct {
			Host string `json:"host"`
		}
		eresp, err := client.Get(s.ServerURL("/debug/explain?key=" + ip))
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(eresp.Body).Decode(&x)
		eresp.Body.Close()
		if err != nil || x.Host == "" {
			t.Fatalf("explain %s: %+v %v", ip, x, err)
		}
		if r.Host != x.Host {
			t.Fatalf("x-forwarded-for %q: served by %s, but the client %s's host is %s: the service keyed another address", xff, r.Host, ip, x.Host)
		}
	}
}
