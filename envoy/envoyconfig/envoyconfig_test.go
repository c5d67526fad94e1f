package envoyconfig

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// load writes a configuration with one pool (its fields indented by four
// spaces) and a key of alg, and loads it as the service does.
func load(t *testing.T, pool, alg string) *affinity.Snapshot {
	t.Helper()
	dir := t.TempDir()
	keys := "k1:" + alg + ":" + base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	if err := os.WriteFile(filepath.Join(dir, "keys.txt"), []byte(keys+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	text := "keys: {file: keys.txt}\npools:\n  - hosts: [{address: '127.0.0.1:8081'}]\n" + pool
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := affinity.LoadFile(path, os.Getenv, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// generate is Pieces, decoded.
func generate(t *testing.T, snap *affinity.Snapshot, opts Options) map[string]any {
	t.Helper()
	out, err := Pieces(snap, opts)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("the output is not YAML: %v\n%s", err, out)
	}
	return doc
}

// TestPiecesMatchTheEnvoyFolder: for the configuration envoy/<mode>.yaml
// is written for, the pieces are that file's own, field for field, and
// the rest of the file is what any Envoy has (listener, stat_prefix, route
// match, the cluster's type, hosts and health checks). A field added to a
// file of envoy/ and not here, or the other way round, fails.
func TestPiecesMatchTheEnvoyFolder(t *testing.T) {
	const headers = "    upstream_headers: {rebound: x-session-rebound, successor: x-session-successor}\n"
	for _, mode := range []string{"verified", "opaque", "native", "verified-envelope"} {
		t.Run(mode, func(t *testing.T) {
			file := strings.TrimSuffix(mode, "-envelope")
			pool := "    mode: " + file + "\n" + headers
			switch mode {
			case "verified", "opaque":
				// envoy/ asks for the client's address, which only this
				// key source needs (native mode keys by Envoy's cookie).
				pool += "    key_sources: [{type: cookie}, {type: client_address}]\n"
			case "verified-envelope":
				pool += "    key_sources: [{type: upstream_header, name: X-Session-Id, envelope: signed}, {type: client_address}]\n"
			}
			got := generate(t, load(t, pool, "ed25519"), Options{Cluster: "app"})
			data, err := os.ReadFile(filepath.Join("..", file+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if mode == "verified-envelope" {
				// What the tests run for such a pool (e2e/envelope_test.go).
				text, err := launch.ApplyChanges(string(data), launch.SessionHeaderChanges("x-session-id", "default"))
				if err != nil {
					t.Fatal(err)
				}
				data = []byte(text)
			}
			var ref map[string]any
			if err := yaml.Unmarshal(data, &ref); err != nil {
				t.Fatal(err)
			}
			if mode == "native" {
				dropAttribute(ref, "source.address")
			}
			static := ref["static_resources"].(map[string]any)
			hcm := static["listeners"].([]any)[0].(map[string]any)["filter_chains"].([]any)[0].(map[string]any)["filters"].([]any)[0].(map[string]any)["typed_config"].(map[string]any)

			setHCM, _ := got[KeyHCM].(map[string]any)
			fieldsOver(t, "http connection manager", hcm, setHCM, "@type", "stat_prefix", "route_config", "http_filters")

			filters := hcm["http_filters"].([]any)
			if last := filters[len(filters)-1].(map[string]any)["name"]; last != RouterFilter {
				t.Fatalf("the last filter is %v", last)
			}
			same(t, "http_filters", filters[:len(filters)-1], got[KeyFilters])

			routes := hcm["route_config"].(map[string]any)["virtual_hosts"].([]any)[0].(map[string]any)["routes"]
			same(t, "routes", routes, got[KeyRoutes])

			var others []any
			for _, c := range static["clusters"].([]any) {
				if c := c.(map[string]any); c["name"] == "app" {
					fieldsOver(t, "cluster app", c, got[KeyCluster].(map[string]any), "name", "type", "connect_timeout", "health_checks", "eds_cluster_config")
				} else {
					others = append(others, c)
				}
			}
			if name := got[KeyCluster].(map[string]any)["name"]; name != "app" {
				t.Errorf("cluster piece names %v", name)
			}
			same(t, "clusters", others, got[KeyClusters])
		})
	}
}

// fieldsOver checks that set holds exactly the fields of full but the
// user's own (and, in set, the name that says which object it goes on).
func fieldsOver(t *testing.T, what string, full, set map[string]any, users ...string) {
	t.Helper()
	for k, v := range full {
		if !slices.Contains(users, k) {
			same(t, what+"."+k, v, set[k])
		}
	}
	for k := range set {
		if _, ok := full[k]; !ok || slices.Contains(users, k) && k != "name" {
			t.Errorf("%s: the piece sets %s, which envoy/ has not there", what, k)
		}
	}
}

func same(t *testing.T, what string, want, got any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		w, _ := yaml.Marshal(want)
		g, _ := yaml.Marshal(got)
		t.Errorf("%s differs from envoy/:\nenvoy/ has\n%s\nthe piece has\n%s", what, w, g)
	}
}

// dropAttribute removes attr from every request_attributes list of tree.
func dropAttribute(tree any, attr string) {
	switch v := tree.(type) {
	case map[string]any:
		for k, e := range v {
			if l, ok := e.([]any); ok && k == "request_attributes" {
				v[k] = slices.DeleteFunc(l, func(a any) bool { return a == attr })
				continue
			}
			dropAttribute(e, attr)
		}
	case []any:
		for _, e := range v {
			dropAttribute(e, attr)
		}
	}
}

func TestPiecesFromTheConfig(t *testing.T) {
	tests := []struct {
		name, pool, alg string
		opts            Options
		want, not       []string
	}{
		{"cookie name and refresh interval", "    mode: verified\n    cookie: {name: sess.id}\n    session: {refresh_interval: 90s}\n", "ed25519", Options{Cluster: "web"},
			[]string{`from_cookies: ["sess.id"]`, "max_lifetime: 92s", `audiences: ["default"]`, `cookie: {name: "sess.id"}`, `cluster: "web"`, `name: "web"`},
			[]string{"source.address", "request_headers_to_remove"}},
		{"named pool", "    name: shop\n    mode: verified\n", "ed25519", Options{},
			[]string{`audiences: ["shop"]`, `cluster: "shop"`, "max_lifetime: 302s", "remote_jwks:", "envoy_affinity_admin"}, nil},
		{"HS256 keys: a local JWKS file", "    mode: verified\n", "hs256", Options{Cluster: "app"},
			[]string{"local_jwks: {filename: jwks.json}", "-with-secrets -out jwks.json"}, []string{"remote_jwks", "envoy_affinity_admin"}},
		{"service by DNS name", "    mode: opaque\n", "ed25519", Options{Cluster: "app", GRPCAddress: "envoy-affinity.ns.svc:9002"},
			[]string{"type: STRICT_DNS", `address: "envoy-affinity.ns.svc", port_value: 9002`}, []string{"envoy_affinity_admin", "jwt_authn"}},
		{"client address key", "    mode: opaque\n    key_sources: [{type: client_address}]\n", "ed25519", Options{Cluster: "app"},
			[]string{`request_attributes: ["xds.cluster_name", "source.address"]`}, nil},
		{"native cookie regex", "    mode: native\n    cookie: {name: a.b, path: /shop}\n", "ed25519", Options{Cluster: "app", AdminAddress: "10.0.0.1:1"},
			[]string{`safe_regex: {regex: "(.*;\\s*)?a\\.b=.*"}`, `cookie: {name: "a.b", path: "/shop"}`}, []string{"10.0.0.1", "jwt_authn"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Pieces(load(t, tt.pool, tt.alg), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := yaml.Unmarshal(out, &doc); err != nil {
				t.Fatalf("not YAML: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %s", w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(string(out), n) {
					t.Errorf("output has %s", n)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

func TestPiecesRefuse(t *testing.T) {
	two := "    name: a\n  - name: b\n    hosts: [{address: '127.0.0.1:8082'}]\n"
	tests := []struct {
		name, pool string
		opts       Options
		want       string
	}{
		{"unnamed pool without a cluster", "", Options{}, "name the cluster of its hosts with -cluster"},
		{"named pool, another cluster", "    name: shop\n", Options{Cluster: "app"}, `its hosts must be cluster "shop"`},
		{"unknown pool", "    name: shop\n", Options{Pool: "cart"}, `no pool "cart" in the configuration (it has shop)`},
		{"several pools, none named", two, Options{}, "the configuration has 2 pools (a, b): name one with -pool"},
		{"output headers", "    mode: opaque\n    output: {header: x-affinity-destination}\n", Options{Cluster: "app"}, "Envoy Gateway or Istio"},
		{"unspecified address", "", Options{Cluster: "app", GRPCAddress: "0.0.0.0:9002"}, "not the one it listens on"},
		{"no port", "", Options{Cluster: "app", AdminAddress: "127.0.0.1"}, "-admin-address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Pieces(load(t, tt.pool, "ed25519"), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestPiecesFollowTheKeySources: for a pool keyed by each type of key source
// alone, in verified and opaque mode, the fallback's hash policy is the
// pool's FallbackHash, and the ext_proc asks for the client's address
// exactly when the pool needs it. A pool without our cookie gets nothing of
// it: no jwt_authn, no cookie in the failover filter's attributes, no hash
// on it; a verified one without a token gets opaque mode's pieces.
func TestPiecesFollowTheKeySources(t *testing.T) {
	for _, mode := range []string{"verified", "opaque"} {
		for _, typ := range affinity.KeySourceTypes() {
			t.Run(mode+"/"+string(typ), func(t *testing.T) {
				// The type alone, or with a name when it needs one.
				entry := "{type: " + string(typ) + "}"
				if _, err := affinity.ParseConfig("t.yaml", []byte("keys: {env: K}\npools:\n  - hosts: [{address: '127.0.0.1:1'}]\n    key_sources: ["+entry+"]\n")); err != nil {
					entry = "{type: " + string(typ) + ", name: X-Session}"
				}
				snap := load(t, "    mode: "+mode+"\n    key_sources: ["+entry+"]\n", "ed25519")
				p := snap.Pools[0]
				out, err := Pieces(snap, Options{Cluster: "app"})
				if err != nil {
					t.Fatal(err)
				}
				doc := generate(t, snap, Options{Cluster: "app"})
				var want map[string]any
				switch h := p.FallbackHash(); {
				case h.Header != "":
					want = map[string]any{"header": map[string]any{"header_name": h.Header}}
				case h.Query != "":
					want = map[string]any{"query_parameter": map[string]any{"name": h.Query}}
				case h.SourceIP:
					want = map[string]any{"connection_properties": map[string]any{"source_ip": true}}
				default:
					want = map[string]any{"cookie": map[string]any{"name": h.Cookie}}
				}
				if got := findKey(doc[KeyCluster], "hash_policy"); !reflect.DeepEqual(got, []any{want}) {
					t.Errorf("the fallback hashes %v, the pool's FallbackHash is %+v", got, p.FallbackHash())
				}
				attrs, _ := findKey(doc[KeyFilters], "request_attributes").([]any)
				if asks := slices.Contains(attrs, any(extproc.SourceAttribute)); len(attrs) == 0 || asks != p.NeedsClientAddress() {
					t.Errorf("request_attributes %v, the pool needs the client address: %v", attrs, p.NeedsClientAddress())
				}
				verifies := p.EnvoyVerifies()
				if has := strings.Contains(string(out), extproc.JWTFilterName); has != verifies {
					t.Errorf("jwt_authn in the pieces: %v, Envoy verifies the pool's tokens: %v", has, verifies)
				}
				if !p.CookieSessions() {
					for _, cookie := range []string{`"affinity"`, "request.headers['cookie']"} {
						if strings.Contains(string(out), cookie) && !verifies {
							t.Errorf("a pool without the cookie source: the pieces have %s", cookie)
						}
					}
				}
				if note := ModeNote(p); (note != "") != (mode == "verified" && !verifies) {
					t.Errorf("mode note %q", note)
				}
			})
		}
	}
}

// TestVerifiedWithoutTokensIsOpaque: a verified pool whose sessions carry
// no token gets the very pieces of the same pool in opaque mode, and is
// told why.
func TestVerifiedWithoutTokensIsOpaque(t *testing.T) {
	for _, sources := range []string{"[{type: header, name: x-session-id}]", "[{type: query, name: sid}, {type: client_address}]", "[{type: app_cookie, name: JSESSIONID}]", "[{type: upstream_header, name: mcp-session-id}]"} {
		t.Run(sources, func(t *testing.T) {
			opaque := load(t, "    mode: opaque\n    key_sources: "+sources+"\n", "ed25519")
			verified := load(t, "    mode: verified\n    key_sources: "+sources+"\n", "ed25519")
			if got, want := generate(t, verified, Options{Cluster: "app"}), generate(t, opaque, Options{Cluster: "app"}); !reflect.DeepEqual(got, want) {
				g, _ := yaml.Marshal(got)
				w, _ := yaml.Marshal(want)
				t.Errorf("verified pieces\n%s\nopaque pieces\n%s", g, w)
			}
			out, err := Pieces(verified, Options{Cluster: "app"})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range []string{"(mode verified)", "no token for Envoy to verify", "these are opaque mode's pieces", "envoy/opaque.yaml is the same set-up"} {
				if !strings.Contains(string(out), w) {
					t.Errorf("the pieces do not say %q", w)
				}
			}
		})
	}
}

// findKey is the value of the first map key named key in tree, depth first.
func findKey(tree any, key string) any {
	switch v := tree.(type) {
	case map[string]any:
		if got, ok := v[key]; ok {
			return got
		}
		for _, sub := range v {
			if got := findKey(sub, key); got != nil {
				return got
			}
		}
	case []any:
		for _, sub := range v {
			if got := findKey(sub, key); got != nil {
				return got
			}
		}
	}
	return nil
}
