package e2e_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/envoy/envoyconfig"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// plainEnvoyYAML is an Envoy as a user runs it before attaching the
// service: one listener, one route to cluster app (with a setting of the
// user's own, a timeout), round robin over hosts from app-endpoints.yaml
// (EDS from a file, as in envoy/). Its ports are those of envoy/, which
// launch maps to free ones.
const plainEnvoyYAML = `node: {id: ingress-1, cluster: ingress}
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: 9901}
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: {address: 127.0.0.1, port_value: 10000}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: app, timeout: 5s}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: EDS
    connect_timeout: 0.25s
    lb_policy: ROUND_ROBIN
    eds_cluster_config:
      service_name: app
      eds_config:
        path_config_source:
          path: app-endpoints.yaml
          watched_directory: {path: .}
`

// newMergedStack starts a stack (opts.Mode, the other options as
// newStackWith takes them) whose Envoy runs plainEnvoyYAML with the pieces
// of `envoy-affinity envoy-config` for the stack's own configuration merged
// in (mergedEnvoyYAML). It returns the stack and the merged file, written
// with envoy/'s default ports; Envoy runs it with the stack's ports as
// s.Dir()/envoy.yaml, beside the app-endpoints.yaml it reads.
func newMergedStack(t *testing.T, opts launch.Options) (*launch.Stack, string) {
	t.Helper()
	merged := filepath.Join(t.TempDir(), "merged.yaml")
	opts.EnvoyYAML = merged
	opts.BeforeEnvoy = func(s *launch.Stack) error { return mergedEnvoyYAML(s, merged) }
	return newStackWith(t, opts), merged
}

// mergedEnvoyYAML writes to path what a user gets who attaches the service
// to plainEnvoyYAML as envoy-config's comments tell: the pieces the built
// binary prints for s's configuration (its pool, cluster app, the service
// at envoy/'s default addresses) merged by mergePieces. The configuration
// must exist and Envoy not run yet: it is meant for Options.BeforeEnvoy
// (newMergedStack), and returns its error so that StartStack stops what it
// started.
func mergedEnvoyYAML(s *launch.Stack, path string) error {
	cmd := exec.Command(s.ServerBinary(), "envoy-config", "-config", s.ConfigPath, "-cluster", "app")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	pieces, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("envoy-config: %v: %s", err, stderr.String())
	}
	merged, err := mergePieces([]byte(plainEnvoyYAML), pieces)
	if err != nil {
		return fmt.Errorf("merging envoy-config's pieces: %w\n%s", err, pieces)
	}
	return os.WriteFile(path, merged, 0o600)
}

// mergePieces does to an Envoy bootstrap what the comments of
// envoy-config's output tell a user: set the HTTP connection manager's
// fields (lists appended), insert the filters before the router, replace
// each route to the pool's cluster by ours (keeping the user's match, with
// our conditions added, and the rest of the user's route under our
// fields), set the cluster's fields (its lb_policy removed) and add the
// service's clusters. A piece that finds nothing to go on is an error.
func mergePieces(bootstrap, pieces []byte) ([]byte, error) {
	var boot, p map[string]any
	if err := yaml.Unmarshal(bootstrap, &boot); err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(pieces, &p); err != nil {
		return nil, fmt.Errorf("the pieces are not YAML: %w", err)
	}
	cluster := asMap(p[envoyconfig.KeyCluster])
	name, _ := cluster["name"].(string)
	static := asMap(boot["static_resources"])
	hcms, replaced := 0, 0
	for _, l := range asList(static["listeners"]) {
		for _, fc := range asList(asMap(l)["filter_chains"]) {
			for _, f := range asList(asMap(fc)["filters"]) {
				if asMap(f)["name"] != "envoy.filters.network.http_connection_manager" {
					continue
				}
				hcms++
				hcm := asMap(asMap(f)["typed_config"])
				for k, v := range asMap(p[envoyconfig.KeyHCM]) {
					hcm[k] = overlay(hcm[k], v)
				}
				filters := asList(hcm["http_filters"])
				router := slices.IndexFunc(filters, func(f any) bool { return asMap(f)["name"] == envoyconfig.RouterFilter })
				if router < 0 {
					return nil, errors.New("an HTTP connection manager without " + envoyconfig.RouterFilter)
				}
				hcm["http_filters"] = slices.Concat(filters[:router], asList(p[envoyconfig.KeyFilters]), filters[router:])
				for _, vh := range asList(asMap(hcm["route_config"])["virtual_hosts"]) {
					var routes []any
					for _, r := range asList(asMap(vh)["routes"]) {
						if asMap(asMap(r)["route"])["cluster"] != name {
							routes = append(routes, r)
							continue
						}
						replaced++
						for _, ours := range asList(p[envoyconfig.KeyRoutes]) {
							routes = append(routes, mergeRoute(asMap(r), asMap(ours)))
						}
					}
					asMap(vh)["routes"] = routes
				}
			}
		}
	}
	if hcms == 0 || replaced == 0 {
		return nil, fmt.Errorf("%d HTTP connection managers, %d routes to cluster %q", hcms, replaced, name)
	}
	found := false
	for _, c := range asList(static["clusters"]) {
		c := asMap(c)
		if c["name"] != name {
			continue
		}
		found = true
		for k := range c {
			if k == "lb_policy" || strings.HasSuffix(k, "_lb_config") {
				delete(c, k)
			}
		}
		for k, v := range cluster {
			c[k] = v
		}
	}
	if !found {
		return nil, fmt.Errorf("no cluster %q", name)
	}
	static["clusters"] = append(asList(static["clusters"]), asList(p[envoyconfig.KeyClusters])...)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(boot); err != nil {
		return nil, err
	}
	return out.Bytes(), enc.Close()
}

// pathMatch are the route match fields that say which paths match: the
// user's stay, ours (prefix "/") only stand for them.
var pathMatch = []string{"prefix", "path", "safe_regex", "path_separated_prefix", "path_match_policy", "connect_matcher"}

// mergeRoute is our route in place of the user's: the user's match with
// our conditions added, the user's route action and fields under ours.
func mergeRoute(user, ours map[string]any) map[string]any {
	out := clone(user).(map[string]any)
	for k, v := range ours {
		if k != "match" {
			out[k] = overlay(out[k], clone(v))
			continue
		}
		match := asMap(out["match"])
		for mk, mv := range asMap(v) {
			if !slices.Contains(pathMatch, mk) {
				match[mk] = overlay(match[mk], clone(mv))
			}
		}
	}
	return out
}

// overlay sets ours over the user's value: lists are appended, objects
// merged field by field, anything else replaced.
func overlay(user, ours any) any {
	switch o := ours.(type) {
	case []any:
		return append(asList(user), o...)
	case map[string]any:
		u, ok := user.(map[string]any)
		if !ok {
			return o
		}
		for k, v := range o {
			u[k] = overlay(u[k], v)
		}
		return u
	}
	return ours
}

func clone(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = clone(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = clone(e)
		}
		return out
	}
	return v
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// TestEnvoyConfigAttaches: a user's plain Envoy with the pieces envoy-config
// prints merged in does what envoy/<mode>.yaml does, in each mode: sessions
// stick; a forged cookie never chooses the host and never gets an error; a
// host leaving the service's pool and Envoy's cluster moves its own
// sessions only, without a failed request; a backend that crashes has its
// sessions served elsewhere at once, the others untouched.
func TestEnvoyConfigAttaches(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ mode, pool string }{
		{"verified", ""},
		{"opaque", "app"}, // a pool named after its cluster
		{"native", ""},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			t.Parallel()
			s, _ := newMergedStack(t, launch.Options{Mode: tt.mode, PoolName: tt.pool})
			ctx := context.Background()
			sessions := spreadSessions(t, s, 12)
			// Every session's next requests, checked against where it is:
			// gone is the host that left (its sessions move, and stay where
			// they land), the others stay.
			check := func(phase, gone string) (moved int) {
				t.Helper()
				moved, _ = followSessions(t, phase, gone, sessions, nil)
				t.Logf("%s: %d sessions moved off %q, no other moved, no request failed", phase, moved, gone)
				if gone != "" && moved == 0 {
					t.Fatalf("%s: no session was on %s", phase, gone)
				}
				return moved
			}
			check("sticky", "")
			if tt.mode != "opaque" {
				// Envoy alone routes established sessions: jwt_authn and
				// the routes (verified), its own cookie (native).
				envoyAlone(t, s, sessions[0], 5)
			}

			pool := cmp.Or(tt.pool, affinity.DefaultPoolName)
			for _, cookie := range forgedCookies(t, s, sessions[0].c.Cookie("affinity"), pool) {
				for range 3 {
					if tt.mode == "native" {
						envoyReplaces(t, s, cookie)
					} else if n := expectNewSession(t, s, cookie); n == 0 {
						t.Fatal("Envoy routed a forged cookie without the service")
					}
				}
			}

			if err := s.SetHosts(ctx, 0, 2); err != nil {
				t.Fatal(err)
			}
			check("backend-2 removed", "backend-2")
			if err := s.SetHosts(ctx, 0, 1, 2); err != nil {
				t.Fatal(err)
			}
			check("backend-2 back", "")

			rebinds := servedElsewhere(t, s)
			s.Backends[0].Proc.Kill()
			moved := check("backend-1 crashed", "backend-1")
			// Envoy marked each failed-over response, and the service
			// re-bound its session there: one each, as they send one
			// request at a time (native: Envoy rewrites its own cookie).
			if rebinds = servedElsewhere(t, s) - rebinds; tt.mode != "native" && rebinds != moved {
				t.Fatalf("%d re-binds for %d failed-over sessions, want one each", rebinds, moved)
			}
		})
	}
}

// forgedCookies are cookie values no client may route by: one that is not
// a token, a real token whose payload now names backend-3 under its old
// signature, and a token naming backend-3 signed by another key under the
// stack's key id.
func forgedCookies(t *testing.T, s *launch.Stack, token, pool string) []string {
	t.Helper()
	third := s.Backends[2].Address()
	h := third + "," + s.Backends[0].Address() // verified: the addresses
	if s.Mode() == "opaque" {
		h = s.Backends[2].Name // opaque: the host's id
	}
	now := time.Now()
	sess := affinity.Session{ID: "forged", Host: h, Primary: base64.StdEncoding.EncodeToString([]byte(third)),
		Start: now, IssuedAt: now, ExpiresAt: now.Add(time.Minute), Pool: pool}
	other, err := affinity.ParseKeyring(launch.NewKeyLine("k1", "ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	otherKey := signSession(t, other, sess)
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		// Native mode: Envoy's own cookie is no token; swap a forged
		// payload under a signature all the same.
		parts = strings.Split(otherKey, ".")
		parts[2] = base64.RawURLEncoding.EncodeToString([]byte("not a signature"))
	}
	swapped := parts[0] + "." + strings.Split(otherKey, ".")[1] + "." + parts[2]
	return []string{"not-a-token", swapped, otherKey}
}

// envoyReplaces sends a request with cookie as native mode's session
// cookie, which is Envoy's own and not a token: Envoy serves it and writes
// a cookie of its own naming the host that served.
func envoyReplaces(t *testing.T, s *launch.Stack, cookie string) {
	t.Helper()
	c := launch.NewClient(s.URL(""))
	c.SetCookie("affinity", cookie)
	r, _, err := c.Get("/")
	if err != nil {
		t.Fatal(err)
	}
	if fresh := c.Cookie("affinity"); fresh == cookie || s.CookieHost(fresh) != r.Host {
		t.Fatalf("served by %s; Envoy's new cookie names %q", r.Host, s.CookieHost(fresh))
	}
}

// TestEnvoyConfigKeyedPool: a pool keyed by the request header
// x-session-id alone (gRPC and mobile clients), attached to a user's plain
// Envoy with the pieces envoy-config prints, in verified mode (which has no
// token to verify there: the pieces are opaque mode's) and in opaque mode.
// The merged Envoy has no jwt_authn and hashes the header in its fallback;
// the doctor finds no problem in it; each session stays on its host, no
// response sets our cookie, and each request costs one ext_proc stream of
// one message; a host leaving moves its own sessions only; a crashed
// backend's sessions are served elsewhere at once, each re-bound there
// once, and stay.
func TestEnvoyConfigKeyedPool(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"verified", "opaque"} {
		t.Run(mode, func(t *testing.T) {
			s, merged := newMergedStack(t, launch.Options{Mode: mode, KeySources: keySources["header"]})
			text, err := os.ReadFile(merged)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"jwt_authn", "envoy_affinity_admin", "request.headers['cookie']"} {
				if strings.Contains(string(text), n) {
					t.Errorf("the merged Envoy has %s", n)
				}
			}
			if !strings.Contains(string(text), "header_name: x-session-id") {
				t.Error("the fallback does not hash x-session-id")
			}
			report, failed := runDoctor(t, "-config", s.ConfigPath, "-envoy-admin", "127.0.0.1:"+strconv.Itoa(s.AdminPort))
			if failed || len(report.Problems) > 0 {
				t.Errorf("doctor: %v", report.Problems)
			}

			sessions := openSessionsOn(t, 12, 2, openKeyed(s, "header"), "backend-1", "backend-2", "backend-3")
			stat := func(name string) int {
				n, err := s.EnvoyStat("http.ingress.ext_proc." + name)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			check := func(phase, gone string) (moved int) {
				t.Helper()
				streams, sent := stat("streams_started"), stat("stream_msgs_sent")
				moved, requests := followSessions(t, phase, gone, sessions, func(resp *http.Response) error {
					if sc := resp.Header.Values("Set-Cookie"); len(sc) > 0 {
						return fmt.Errorf("a header-keyed session got Set-Cookie %q", sc)
					}
					return nil
				})
				// The deciding ext_proc: one stream and one message each
				// (the failover filter counts apart).
				if gone == "" {
					if n, m := stat("streams_started")-streams, stat("stream_msgs_sent")-sent; n != requests || m != requests {
						t.Fatalf("%s: %d requests took %d ext_proc streams and %d messages, want one each", phase, requests, n, m)
					}
				}
				t.Logf("%s: %d sessions moved off %q, no other moved, no request failed", phase, moved, gone)
				if gone != "" && moved == 0 {
					t.Fatalf("%s: no session was on %s", phase, gone)
				}
				return moved
			}
			check("sticky", "")

			if err := s.SetHosts(context.Background(), 0, 2); err != nil {
				t.Fatal(err)
			}
			check("backend-2 removed", "backend-2")
			if err := s.SetHosts(context.Background(), 0, 1, 2); err != nil {
				t.Fatal(err)
			}
			check("backend-2 back", "")

			rebinds := servedElsewhere(t, s)
			s.Backends[0].Proc.Kill()
			moved := check("backend-1 crashed", "backend-1")
			if rebinds = servedElsewhere(t, s) - rebinds; rebinds != moved {
				t.Fatalf("%d re-binds for %d failed-over sessions, want one each", rebinds, moved)
			}
		})
	}
}

// followSessions sends two rounds of every session's requests and checks
// each against where the session is: gone is the host that left (its
// sessions move in the first round, and stay where they land), the others
// stay; each answer also passes check (when not nil). It returns the
// sessions that moved and the requests sent.
func followSessions(t *testing.T, phase, gone string, sessions []*session, check func(*http.Response) error) (moved, requests int) {
	t.Helper()
	for round := range 2 {
		for i, ss := range sessions {
			r, resp, err := ss.get()
			requests++
			if err == nil && check != nil {
				err = check(resp)
			}
			switch {
			case err != nil:
				t.Fatalf("%s: session %d of %s, request %d: %v", phase, i, ss.host, round+1, err)
			case ss.host == gone: // the first round only: it moves
				if r.Host == gone {
					t.Fatalf("%s: session %d still served by %s", phase, i, gone)
				}
				ss.host = r.Host
				moved++
			case r.Host != ss.host:
				t.Fatalf("%s: session %d of %s served by %s (request %d)", phase, i, ss.host, r.Host, round+1)
			}
		}
	}
	return moved, requests
}
