package doctor

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/envoytree"
)

// ruleCase is one rule of the catalogue put to the test on a bootstrap of
// envoy/ that keeps it: edited, the bootstrap breaks the rule; as it is (or
// edited by keeps) it does not.
type ruleCase struct {
	rule *Rule
	// file is the bootstrap, relative to envoy/.
	file string
	// pools are the service's pools (the items of its pools list).
	pools string
	// breaks edits the bootstrap so that the rule is broken.
	breaks func(t *testing.T, y tree)
	// keeps edits the bootstrap for the case where the rule holds (nil:
	// the file as it is).
	keeps func(t *testing.T, y tree)
	// live, when set, makes the Envoy read a running one whose state
	// breaks the rule or not; it returns the client that reaches it.
	live func(t *testing.T, e *Envoy, broken bool) *http.Client
}

const (
	verifiedYAML = "verified.yaml"
	opaqueYAML   = "opaque.yaml"
	nativeYAML   = "native.yaml"
	istioYAML    = "istio-session-header.yaml"
	mcpYAML      = "../examples/mcp/envoy.yaml"

	extProcName        = "envoy.filters.http.ext_proc"
	failoverFilterName = "affinity-failover"
	jwtName            = "envoy.filters.http.jwt_authn"
	sessionName        = "envoy.filters.http.stateful_session"
)

var (
	verifiedPool = onePool("mode: verified")
	opaquePool   = onePool("mode: opaque")
	nativePool   = onePool("mode: native")
	istioPool    = onePool("mode: opaque\n    output: {stateful_session_header: x-session-host}")
	mcpPool      = onePool("name: mcp\n    mode: verified\n    key_sources: [{type: upstream_header, name: Mcp-Session-Id, envelope: signed}]")
)

// set returns an edit that sets key to value in the mapping at the end of
// path (from the bootstrap).
func set(at func(t *testing.T, y tree) tree, key string, value any) func(t *testing.T, y tree) {
	return func(t *testing.T, y tree) { at(t, y)[key] = value }
}

// drop returns an edit that removes key from the mapping at.
func drop(at func(t *testing.T, y tree) tree, key string) func(t *testing.T, y tree) {
	return func(t *testing.T, y tree) {
		t.Helper()
		m := at(t, y)
		if _, ok := m[key]; !ok {
			t.Fatalf("no %q to remove", key)
		}
		delete(m, key)
	}
}

func extProc(t *testing.T, y tree) tree     { return envoytree.FilterConfig(t, y, extProcName) }
func appCluster(t *testing.T, y tree) tree  { return envoytree.ClusterNamed(t, y, "app") }
func grpcCluster(t *testing.T, y tree) tree { return envoytree.ClusterNamed(t, y, "envoy_affinity") }
func established(t *testing.T, y tree) tree { return envoytree.RouteNamed(t, y, "established") }
func remoteJWKS(t *testing.T, y tree) tree {
	return envoytree.Dig(t, envoytree.Provider(t, y, "affinity"), "remote_jwks", "http_uri")
}
func decideMode(t *testing.T, y tree) tree {
	return envoytree.Dig(t, envoytree.RouteNamed(t, y, "decide"), "typed_per_filter_config", extProcName, "overrides", "processing_mode")
}

// fallbackHashPolicy is the consistent hashing settings of cluster app's
// fallback policy.
func fallbackHashPolicy(t *testing.T, y tree) tree {
	return envoytree.Dig(t, envoytree.OverrideHost(t, y, "app"), "fallback_policy", "policies", 0, "typed_extension_config", "typed_config",
		"consistent_hashing_lb_config")
}

// eachRetryPolicy edits the retry policy of every route.
func eachRetryPolicy(edit func(rp tree)) func(t *testing.T, y tree) {
	return func(t *testing.T, y tree) {
		eachRoute(t, y, func(action, _ tree) { edit(envoytree.Dig(t, action, "retry_policy")) })
	}
}

// routesOnly keeps only the named routes, in the order given.
func routesOnly(names ...string) func(t *testing.T, y tree) {
	return func(t *testing.T, y tree) {
		var out []any
		for _, n := range names {
			out = append(out, envoytree.RouteNamed(t, y, n))
		}
		envoytree.VirtualHost(t, y)["routes"] = out
	}
}

// inlineJWKS replaces the remote key set with an inline one of a key id.
func inlineJWKS(kid string) func(t *testing.T, y tree) {
	return func(t *testing.T, y tree) {
		p := envoytree.Provider(t, y, "affinity")
		delete(p, "remote_jwks")
		p["local_jwks"] = tree{"inline_string": `{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "` + kid + `", "x": "AA"}]}`}
	}
}

// jwksServer makes the JWKS cluster's one host a server that answers the
// key set of k1, or fails.
func jwksServer(t *testing.T, e *Envoy, broken bool) *http.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if broken {
			http.Error(w, "no keys here", http.StatusNotFound)
			return
		}
		fmt.Fprint(w, `{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": "AA"}]}`)
	}))
	t.Cleanup(srv.Close)
	e.Live = true
	e.Members["envoy_affinity_admin"] = []Member{{Address: strings.TrimPrefix(srv.URL, "http://"), Healthy: true}}
	return srv.Client()
}

var threeMembers = []member{{8081, "backend-1"}, {8082, "backend-2"}, {8083, "backend-3"}}

var ruleCases = []ruleCase{
	{rule: extProcNowhere, file: verifiedYAML, pools: verifiedPool, breaks: envoytree.RemoveExtProcs},
	{rule: extProcMissing, file: verifiedYAML, pools: onePool("name: app\n    mode: verified"), breaks: envoytree.RemoveExtProcs},
	{rule: routeNowhere, file: verifiedYAML, pools: verifiedPool,
		breaks: func(t *testing.T, y tree) { envoytree.VirtualHost(t, y)["routes"] = []any{} }},
	// A cluster Envoy has, but no route sends requests to.
	{rule: routeMissing, file: verifiedYAML, pools: onePool("name: envoy_affinity_admin\n    mode: opaque"),
		keeps: func(t *testing.T, y tree) {
			eachRoute(t, y, func(action, _ tree) { action["cluster"] = "envoy_affinity_admin" })
		}},
	{rule: poolClusterMissing, file: opaqueYAML, pools: onePool("name: shop\n    mode: opaque"),
		keeps: func(t *testing.T, y tree) {
			appCluster(t, y)["name"] = "shop"
			eachRoute(t, y, func(action, _ tree) { action["cluster"] = "shop" })
		}},
	{rule: routedClusterMissing, file: verifiedYAML, pools: verifiedPool,
		breaks: func(t *testing.T, y tree) {
			vh := envoytree.VirtualHost(t, y)
			vh["routes"] = append([]any{tree{"name": "gone", "match": tree{"prefix": "/gone"}, "route": tree{"cluster": "gone"}}}, vh["routes"].([]any)...)
		}},
	{rule: discoveryCluster, file: verifiedYAML, pools: "  - mode: verified\n    discovery: {envoy: {admin: 127.0.0.1:9901, cluster: web}}\n",
		keeps: func(t *testing.T, y tree) {
			s := envoytree.Dig(t, y, "static_resources")
			s["clusters"] = append(s["clusters"].([]any), tree{"name": "web", "type": "STATIC"})
		}},

	{rule: failureModeAllow, file: verifiedYAML, pools: verifiedPool, breaks: set(extProc, "failure_mode_allow", false)},
	{rule: allowModeOverride, file: verifiedYAML, pools: verifiedPool, breaks: drop(extProc, "allow_mode_override")},
	{rule: messageTimeoutLong, file: verifiedYAML, pools: verifiedPool, breaks: set(extProc, "message_timeout", "5s")},
	{rule: messageTimeoutShort, file: verifiedYAML, pools: verifiedPool, breaks: set(extProc, "message_timeout", "0.01s")},
	{rule: requestHeadersSkipped, file: verifiedYAML, pools: verifiedPool,
		breaks: drop(func(t *testing.T, y tree) tree {
			return envoytree.Dig(t, envoytree.RouteNamed(t, y, "decide"), "typed_per_filter_config")
		}, extProcName)},
	{rule: responseHeadersSkipped, file: opaqueYAML, pools: opaquePool,
		breaks: set(func(t *testing.T, y tree) tree { return envoytree.Dig(t, extProc(t, y), "processing_mode") }, "response_header_mode", "SKIP")},
	{rule: bodiesSent, file: verifiedYAML, pools: verifiedPool, breaks: set(decideMode, "request_body_mode", "BUFFERED")},
	{rule: requestAttributesCluster, file: opaqueYAML, pools: onePool("name: app\n    mode: opaque"),
		breaks: set(extProc, "request_attributes", []any{"source.address"})},
	{rule: requestAttributesSource, file: verifiedYAML, pools: onePool("mode: verified\n    key_sources: [{type: cookie}, {type: client_address}]"),
		breaks: set(extProc, "request_attributes", []any{"xds.cluster_name"})},
	{rule: receivingNamespaces, file: verifiedYAML, pools: verifiedPool,
		breaks: drop(func(t *testing.T, y tree) tree { return envoytree.Dig(t, extProc(t, y), "metadata_options") }, "receiving_namespaces")},
	{rule: forwardingNamespaces, file: verifiedYAML, pools: verifiedPool,
		breaks: drop(func(t *testing.T, y tree) tree { return envoytree.Dig(t, extProc(t, y), "metadata_options") }, "forwarding_namespaces")},
	{rule: grpcServiceUnnamed, file: verifiedYAML, pools: verifiedPool, breaks: set(extProc, "grpc_service", tree{"timeout": "1s"})},
	{rule: grpcClusterMissing, file: verifiedYAML, pools: verifiedPool,
		breaks: set(func(t *testing.T, y tree) tree { return envoytree.Dig(t, extProc(t, y), "grpc_service", "envoy_grpc") }, "cluster_name", "gone")},
	{rule: grpcHTTP1, file: verifiedYAML, pools: verifiedPool, breaks: drop(grpcCluster, "typed_extension_protocol_options")},
	{rule: grpcUnhealthy, file: verifiedYAML, pools: verifiedPool,
		live: func(_ *testing.T, e *Envoy, broken bool) *http.Client {
			e.Live = true
			e.Members["envoy_affinity"] = []Member{{Address: "127.0.0.1:9002", Healthy: !broken}}
			return nil
		}},

	{rule: overrideHostPolicy, file: verifiedYAML, pools: verifiedPool, breaks: drop(appCluster, "load_balancing_policy")},
	{rule: decisionSource, file: opaqueYAML, pools: opaquePool, breaks: set(overrideHost, "override_host_sources", []any{})},
	{rule: tokenSource, file: verifiedYAML, pools: verifiedPool,
		breaks: func(t *testing.T, y tree) {
			oh := envoytree.OverrideHost(t, y, "app")
			oh["override_host_sources"] = oh["override_host_sources"].([]any)[1:]
		}},
	{rule: sourceOrder, file: verifiedYAML, pools: verifiedPool,
		breaks: func(t *testing.T, y tree) {
			s := envoytree.OverrideHost(t, y, "app")["override_host_sources"].([]any)
			s[0], s[1] = s[1], s[0]
		}},
	{rule: selectedHostKey, file: verifiedYAML, pools: verifiedPool, breaks: drop(overrideHost, "selected_host_key")},
	{rule: fallbackHash, file: verifiedYAML, pools: verifiedPool,
		breaks: set(func(t *testing.T, y tree) tree {
			return envoytree.Dig(t, envoytree.OverrideHost(t, y, "app"), "fallback_policy", "policies", 0, "typed_extension_config", "typed_config",
				"consistent_hashing_lb_config", "hash_policy", 0, "cookie")
		}, "name", "other")},
	// A pool without the cookie source: the fallback hashes its first key.
	{rule: fallbackHash, file: opaqueYAML, pools: onePool("mode: opaque\n    key_sources: [{type: header, name: X-Session-Id}, {type: query, name: sid}]"),
		keeps: set(fallbackHashPolicy, "hash_policy", []any{tree{"header": tree{"header_name": "x-session-id"}}})},
	{rule: fallbackHash, file: opaqueYAML, pools: onePool("mode: verified\n    key_sources: [{type: query, name: sid}]"),
		keeps: set(fallbackHashPolicy, "hash_policy", []any{tree{"query_parameter": tree{"name": "sid"}}})},
	{rule: fallbackHash, file: opaqueYAML, pools: onePool("mode: opaque\n    key_sources: [{type: client_address}]"),
		keeps: set(fallbackHashPolicy, "hash_policy", []any{tree{"connection_properties": tree{"source_ip": true}}})},
	{rule: retryOn, file: verifiedYAML, pools: verifiedPool, breaks: eachRetryPolicy(func(rp tree) { rp["retry_on"] = "5xx-not" })},
	{rule: retryCount, file: verifiedYAML, pools: verifiedPool, breaks: eachRetryPolicy(func(rp tree) { rp["num_retries"] = 0 })},
	{rule: retryPreviousHosts, file: verifiedYAML, pools: verifiedPool, breaks: eachRetryPolicy(func(rp tree) { delete(rp, "retry_host_predicate") })},
	{rule: retryAttempts, file: verifiedYAML, pools: verifiedPool,
		breaks: eachRetryPolicy(func(rp tree) { rp["host_selection_retry_max_attempts"] = 2 })},
	{rule: retryAttemptsNative, file: nativeYAML, pools: nativePool,
		breaks: eachRetryPolicy(func(rp tree) { rp["host_selection_retry_max_attempts"] = 5 })},
	{rule: maxRetries, file: verifiedYAML, pools: verifiedPool, breaks: drop(appCluster, "circuit_breakers")},

	{rule: jwtProvider, file: verifiedYAML, pools: verifiedPool, breaks: set(provider, "from_cookies", []any{"other"})},
	{rule: payloadInMetadata, file: verifiedYAML, pools: verifiedPool, breaks: drop(provider, "payload_in_metadata")},
	{rule: clearRouteCache, file: verifiedYAML, pools: verifiedPool, breaks: set(provider, "clear_route_cache", false)},
	{rule: jwtCacheConfig, file: verifiedYAML, pools: verifiedPool, breaks: drop(provider, "jwt_cache_config")},
	{rule: clockSkew, file: verifiedYAML, pools: verifiedPool, breaks: drop(provider, "clock_skew_seconds")},
	{rule: audiencesOther, file: verifiedYAML, pools: verifiedPool, breaks: set(provider, "audiences", []any{"other"})},
	{rule: audiencesUnset, file: verifiedYAML,
		pools:  onePool("name: app\n    mode: verified") + onePool("name: other\n    mode: verified"),
		breaks: drop(provider, "audiences"),
		keeps:  set(provider, "audiences", []any{"app", "other"})},
	{rule: maxLifetime, file: verifiedYAML, pools: verifiedPool, breaks: set(provider, "max_lifetime", "60s")},
	{rule: jwtRequired, file: verifiedYAML, pools: verifiedPool,
		breaks: set(func(t *testing.T, y tree) tree {
			return envoytree.Dig(t, envoytree.FilterConfig(t, y, jwtName), "rules", 0)
		}, "requires", tree{"provider_name": "affinity"})},
	{rule: jwksCluster, file: verifiedYAML, pools: verifiedPool, breaks: set(remoteJWKS, "cluster", "gone")},
	{rule: jwksPath, file: verifiedYAML, pools: verifiedPool, breaks: set(remoteJWKS, "uri", "http://127.0.0.1:9003/keys.json")},
	{rule: jwksFetch, file: verifiedYAML, pools: verifiedPool, live: jwksServer},
	{rule: jwksKey, file: verifiedYAML, pools: verifiedPool, breaks: inlineJWKS("k2"), keeps: inlineJWKS("k1")},
	{rule: envelopeRestore, file: mcpYAML, pools: mcpPool, breaks: drop(established, "request_headers_to_add")},
	{rule: envelopeResponse, file: mcpYAML, pools: mcpPool, breaks: drop(established, "response_headers_to_remove")},

	{rule: establishedAsks, file: verifiedYAML, pools: verifiedPool,
		breaks: set(func(t *testing.T, y tree) tree { return envoytree.Dig(t, extProc(t, y), "processing_mode") }, "request_header_mode", "SEND")},
	{rule: establishedAsksNative, file: nativeYAML, pools: nativePool, breaks: drop(established, "typed_per_filter_config")},
	{rule: establishedMissing, file: verifiedYAML, pools: verifiedPool, breaks: routesOnly("decide")},
	{rule: establishedPath, file: verifiedYAML, pools: verifiedPool,
		breaks: set(func(t *testing.T, y tree) tree {
			return envoytree.Dig(t, established(t, y), "match", "dynamic_metadata", 0)
		},
			"path", []any{tree{"key": "other"}, tree{"key": "h"}})},
	{rule: routeOrder, file: verifiedYAML, pools: verifiedPool, breaks: routesOnly("decide", "established")},

	{rule: failoverNoResponse, file: verifiedYAML, pools: verifiedPool,
		breaks: set(func(t *testing.T, y tree) tree { return envoytree.Dig(t, extProc(t, y), "processing_mode") }, "response_header_mode", "SKIP")},
	{rule: failoverCookie, file: verifiedYAML, pools: verifiedPool, breaks: drop(extProc, "response_attributes")},
	{rule: failoverCookieOpaque, file: opaqueYAML, pools: opaquePool,
		breaks: drop(func(t *testing.T, y tree) tree { return envoytree.FilterConfig(t, y, failoverFilterName) }, "response_attributes")},
	{rule: failoverUnwrapped, file: verifiedYAML, pools: verifiedPool,
		breaks: func(t *testing.T, y tree) {
			f := envoytree.Dig(t, envoytree.ConnectionManager(t, y), "http_filters", envoytree.FilterIndex(t, y, extProcName))
			f["typed_config"] = extProc(t, y)
		}},
	{rule: failoverUnmarked, file: verifiedYAML, pools: verifiedPool, breaks: drop(provider, "claim_to_headers")},
	{rule: failoverUnmarkedOpaque, file: opaqueYAML, pools: opaquePool,
		breaks: func(t *testing.T, y tree) { eachRoute(t, y, func(_, r tree) { delete(r, "response_headers_to_add") }) }},
	{rule: earlyHeaderRemoval, file: verifiedYAML, pools: verifiedPool, breaks: drop(envoytree.ConnectionManager, "early_header_mutation_extensions")},

	{rule: sessionCookieMissing, file: nativeYAML, pools: nativePool, breaks: func(t *testing.T, y tree) { envoytree.RemoveFilter(t, y, sessionName) }},
	{rule: sessionCookie, file: nativeYAML, pools: nativePool,
		breaks: set(func(t *testing.T, y tree) tree {
			return envoytree.Dig(t, envoytree.FilterConfig(t, y, sessionName), "session_state", "typed_config", "cookie")
		}, "name", "other")},
	{rule: headerSessionMissing, file: istioYAML, pools: istioPool, breaks: func(t *testing.T, y tree) { envoytree.RemoveFilter(t, y, sessionName) }},
	{rule: extProcBeforeJWT, file: verifiedYAML, pools: verifiedPool, breaks: func(t *testing.T, y tree) { envoytree.SwapFilters(t, y, jwtName, extProcName) }},
	{rule: markerBeforeExtProc, file: verifiedYAML, pools: verifiedPool, breaks: func(t *testing.T, y tree) { envoytree.SwapFilters(t, y, sessionName, extProcName) }},
	{rule: extProcBeforeSession, file: nativeYAML, pools: nativePool, breaks: func(t *testing.T, y tree) { envoytree.SwapFilters(t, y, sessionName, extProcName) }},
	{rule: extProcAfterHeaderSession, file: istioYAML, pools: istioPool, breaks: func(t *testing.T, y tree) { envoytree.SwapFilters(t, y, sessionName, extProcName) }},

	{rule: hostMissing, file: verifiedYAML, pools: verifiedPool,
		breaks: func(t *testing.T, y tree) { members(t, y, threeMembers[:2]...) },
		keeps:  func(t *testing.T, y tree) { members(t, y, threeMembers...) }},
	{rule: hostExtra, file: verifiedYAML, pools: verifiedPool,
		breaks: func(t *testing.T, y tree) {
			members(t, y, append(slices.Clone(threeMembers), member{8084, "backend-4"})...)
		},
		keeps: func(t *testing.T, y tree) { members(t, y, threeMembers...) }},
	{rule: hostName, file: verifiedYAML, pools: verifiedPool,
		breaks: func(t *testing.T, y tree) { members(t, y, member{8081, "web-1"}, threeMembers[1], threeMembers[2]) },
		keeps:  func(t *testing.T, y tree) { members(t, y, threeMembers...) }},
}

// TestRules: each rule of the catalogue, on a bootstrap of envoy/ read as
// a file is, is found when the bootstrap breaks it and not when it keeps
// it; a problem found carries its rule's id, severity and texts, every
// placeholder filled.
func TestRules(t *testing.T) {
	for i, c := range ruleCases {
		t.Run(fmt.Sprintf("%02d-%s", i, c.rule.ID), func(t *testing.T) {
			svc := loadService(t, c.pools)
			for _, broken := range []bool{true, false} {
				y := bootstrap(t, c.file)
				edit := c.keeps
				if broken {
					edit = c.breaks
				}
				if edit != nil {
					edit(t, y)
				}
				e := readBootstrap("../"+c.file, y)
				var client *http.Client
				if c.live != nil {
					client = c.live(t, e, broken)
				}
				r := Check(context.Background(), e, svc, client)
				i := slices.IndexFunc(r.Problems, func(p Problem) bool { return p.rule == c.rule })
				switch {
				case broken && i < 0:
					t.Fatalf("broken: not found (%s); found %v", c.rule.Compares, r.Problems)
				case !broken && i >= 0:
					t.Fatalf("kept: found %v", r.Problems[i])
				case broken:
					p := r.Problems[i]
					if p.Check != c.rule.ID || p.Severity != c.rule.Severity || p.Where == "" || p.Problem == "" {
						t.Errorf("problem %+v of rule %+v", p, *c.rule)
					}
					if strings.Contains(p.Breaks+p.Fix, "${") {
						t.Errorf("a placeholder left unfilled: %s", p)
					}
				}
			}
		})
	}
}

// TestEveryRuleHasACase: the catalogue and the cases of TestRules cover
// each other.
func TestEveryRuleHasACase(t *testing.T) {
	catalogue := Catalogue()
	for _, r := range catalogue {
		if !slices.ContainsFunc(ruleCases, func(c ruleCase) bool { return c.rule == r }) {
			t.Errorf("rule %s (%s) has no case", r.ID, r.Compares)
		}
	}
	for _, c := range ruleCases {
		if !slices.Contains(catalogue, c.rule) {
			t.Errorf("case of %s (%s): the rule is not in the catalogue", c.rule.ID, c.rule.Compares)
		}
	}
}
