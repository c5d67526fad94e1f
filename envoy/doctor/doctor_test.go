package doctor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/envoytree"
)

// service loads a configuration whose one pool is given as YAML, with the
// three hosts of envoy/app-endpoints.yaml.
func service(t *testing.T, pool string) Service {
	return loadService(t, onePool(pool))
}

// onePool is a pools list of one pool, with the three hosts of
// envoy/app-endpoints.yaml.
func onePool(pool string) string {
	return "  - " + pool + `
    hosts:
      - {name: backend-1, address: 127.0.0.1:8081}
      - {name: backend-2, address: 127.0.0.1:8082}
      - {name: backend-3, address: 127.0.0.1:8083}
`
}

// loadService loads a configuration of the pools given (the items of its
// pools list, as YAML) and one signing key, k1.
func loadService(t *testing.T, pools string) Service {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(keys, []byte("k1:ed25519:"+"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("keys: {file: keys.txt}\npools:\n"+pools), 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := affinity.LoadFile(config, os.Getenv, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return Service{Pools: snap.Pools, Keys: snap.Codec.Keys(), Now: time.Now()}
}

// TestShippedYAMLs: each Envoy YAML of envoy/ agrees with the pool it is
// written for (the end-to-end tests run them), and a plain Envoy without
// the service is told what is missing.
func TestShippedYAMLs(t *testing.T) {
	for _, c := range []struct {
		file, pool string
		want       string // a check expected ("" = no problem at all)
	}{
		{file: "verified.yaml", pool: "mode: verified"},
		{file: "opaque.yaml", pool: "mode: opaque"},
		{file: "opaque-mtls.yaml", pool: "mode: opaque"},
		{file: "native.yaml", pool: "mode: native"},
		{file: "gateway-header.yaml", pool: "mode: opaque\n    output: {header: x-affinity-destination}"},
		{file: "istio-session-header.yaml", pool: "mode: opaque\n    output: {stateful_session_header: x-session-host}"},
		{file: "../examples/mcp/envoy.yaml", pool: "name: mcp\n    mode: verified\n    key_sources: [{type: upstream_header, name: Mcp-Session-Id, envelope: signed}]"},
		{file: "../examples/mcp/envoy-opaque.yaml", pool: "name: mcp\n    mode: opaque\n    key_sources: [{type: upstream_header, name: mcp-session-id}]"},
		{file: "../examples/mcp/envoy-opaque.yaml", pool: "name: mcp\n    mode: opaque\n    key_sources: [{type: upstream_header, name: mcp-session-id, envelope: signed}]"},
		{file: "../examples/mcp/envoy.yaml", pool: "name: mcp\n    mode: verified\n    key_sources: [{type: upstream_header, name: x-other, envelope: signed}]", want: "jwt_authn.provider"},
		{file: "../examples/mcp/envoy.yaml", pool: "name: mcp\n    mode: verified\n    session: {absolute_timeout: 48h}\n    key_sources: [{type: upstream_header, name: Mcp-Session-Id, envelope: signed}]", want: "jwt_authn.max_lifetime"},
		{file: "verified.yaml", pool: "mode: verified\n    session: {refresh_interval: 10m}", want: "jwt_authn.max_lifetime"},
		{file: "verified.yaml", pool: "mode: opaque", want: "ext_proc.processing_mode"},
		{file: "../e2e/bench/baseline.yaml", pool: "mode: verified", want: "ext_proc.missing"},
	} {
		t.Run(c.file+"/"+c.pool, func(t *testing.T) {
			e, err := ReadYAML(filepath.Join("..", c.file))
			if err != nil {
				t.Fatal(err)
			}
			r := Check(context.Background(), e, service(t, c.pool), nil)
			if c.want == "" && len(r.Problems) > 0 {
				t.Fatalf("problems: %v", r.Problems)
			}
			if c.want != "" && !r.Has(c.want) {
				t.Fatalf("no %s in %v", c.want, r.Problems)
			}
			if len(e.Members["app"]) != 3 && c.want == "" && filepath.Dir(c.file) == "." {
				t.Errorf("cluster app's hosts from the EDS file: %v", e.Members["app"])
			}
		})
	}
}

// TestKeyedPoolsTakeOpaqueYAML: opaque.yaml as envoy-config prints it for
// a pool keyed by a header (the fallback hashing the header, the failover
// filter sent no cookie) agrees with such a pool in opaque mode and in
// verified mode, which has no token to verify there; a verified pool of
// cookie sessions does not.
func TestKeyedPoolsTakeOpaqueYAML(t *testing.T) {
	for _, c := range []struct {
		pool string
		want string // a check expected ("" = no problem at all)
	}{
		{pool: "mode: opaque\n    key_sources: [{type: header, name: x-session-id}]"},
		{pool: "mode: verified\n    key_sources: [{type: header, name: x-session-id}]"},
		{pool: "mode: verified\n    key_sources: [{type: header, name: x-session-id}, {type: cookie}]", want: "jwt_authn.provider"},
		{pool: "mode: opaque\n    key_sources: [{type: header, name: x-session-id}, {type: cookie}]", want: "failover.response"},
	} {
		t.Run(c.pool, func(t *testing.T) {
			y := bootstrap(t, opaqueYAML)
			fallbackHashPolicy(t, y)["hash_policy"] = []any{tree{"header": tree{"header_name": "x-session-id"}}}
			envoytree.FilterConfig(t, y, failoverFilterName)["response_attributes"] = []any{"xds.cluster_name"}
			r := Check(context.Background(), readBootstrap("../"+opaqueYAML, y), service(t, c.pool), nil)
			if c.want == "" && len(r.Problems) > 0 {
				t.Fatalf("problems: %v", r.Problems)
			}
			if c.want != "" && !r.Has(c.want) {
				t.Fatalf("no %s in %v", c.want, r.Problems)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	for _, c := range []struct {
		in   any
		want time.Duration
		ok   bool
	}{
		{"0.200s", 200 * time.Millisecond, true},
		{"0.2s", 200 * time.Millisecond, true},
		{map[string]any{"seconds": 1, "nanos": 500}, time.Second + 500, true},
		{"soon", 0, false},
		{nil, 0, false},
	} {
		got, ok := duration(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("duration(%v) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
