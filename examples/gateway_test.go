package examples

import (
	"slices"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// eg is the Envoy Gateway recipe, decoded.
type eg struct {
	route  httpRoute
	policy envoyExtensionPolicy
	grant  referenceGrant
	lb     backendTrafficPolicy
}

func loadEG(t *testing.T) eg {
	t.Helper()
	docs := recipeDocs(t, "envoy-gateway")
	return eg{
		route:  mustDecode[httpRoute](t, find(t, docs, "HTTPRoute", "web")),
		policy: mustDecode[envoyExtensionPolicy](t, find(t, docs, "EnvoyExtensionPolicy", "envoy-affinity")),
		grant:  mustDecode[referenceGrant](t, find(t, docs, "ReferenceGrant", "envoy-affinity-ext-proc")),
		lb:     mustDecode[backendTrafficPolicy](t, find(t, docs, "BackendTrafficPolicy", "envoy-affinity")),
	}
}

// TestEnvoyGatewayWiring checks that the policies target the route, the
// route goes to web, and the ext_proc backend is the envoy-affinity
// Service's gRPC port, reachable across namespaces by the ReferenceGrant.
func TestEnvoyGatewayWiring(t *testing.T) {
	k, g := loadK8s(t), loadEG(t)
	ns := g.route.Metadata.Namespace
	if ns != k.web.Metadata.Namespace {
		t.Errorf("the route is in %s, web in %s", ns, k.web.Metadata.Namespace)
	}
	want := []targetRef{{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Name: g.route.Metadata.Name}}
	for kind, p := range map[string]struct {
		ns   string
		refs []targetRef
	}{
		"EnvoyExtensionPolicy": {g.policy.Metadata.Namespace, g.policy.Spec.TargetRefs},
		"BackendTrafficPolicy": {g.lb.Metadata.Namespace, g.lb.Spec.TargetRefs},
	} {
		if p.ns != ns || !slices.Equal(p.refs, want) {
			t.Errorf("%s in %s targets %v, want %v in %s", kind, p.ns, p.refs, want, ns)
		}
	}
	webPort := servicePortNamed(t, k.web, "http").Port
	if r := g.route.Spec.Rules; len(r) != 1 || len(r[0].BackendRefs) != 1 || r[0].BackendRefs[0].Name != k.web.Metadata.Name || r[0].BackendRefs[0].Port != webPort {
		t.Errorf("the route should send to Service %s port %d: %+v", k.web.Metadata.Name, webPort, r)
	}

	if len(g.policy.Spec.ExtProc) != 1 || len(g.policy.Spec.ExtProc[0].BackendRefs) != 1 {
		t.Fatalf("want one ext_proc with one backendRef, have %+v", g.policy.Spec.ExtProc)
	}
	br := g.policy.Spec.ExtProc[0].BackendRefs[0]
	if br.Name != k.service.Metadata.Name || br.Namespace != k.service.Metadata.Namespace || br.Port != servicePortNamed(t, k.service, "grpc").Port || br.Kind != nil || br.Group != nil {
		t.Errorf("ext_proc backendRef %+v is not the envoy-affinity Service's grpc port", br)
	}
	if g.grant.Metadata.Namespace != k.service.Metadata.Namespace {
		t.Errorf("the ReferenceGrant must be in the Service's namespace %s", k.service.Metadata.Namespace)
	}
	from := grantFrom{Group: "gateway.envoyproxy.io", Kind: "EnvoyExtensionPolicy", Namespace: g.policy.Metadata.Namespace}
	to := grantTo{Group: "", Kind: "Service", Name: k.service.Metadata.Name}
	if !slices.Contains(g.grant.Spec.From, from) || !slices.Contains(g.grant.Spec.To, to) {
		t.Errorf("the ReferenceGrant does not let EnvoyExtensionPolicies in %s use Service %s", g.policy.Metadata.Namespace, k.service.Metadata.Name)
	}
}

// TestEnvoyGatewayReadmeConfig loads the README's service configuration and
// checks it against the policies: one unnamed opaque pool (the policy's
// route is all it sees), writing the header the endpoint override reads,
// with the cookie the fallback hash uses, its hosts web's pods.
func TestEnvoyGatewayReadmeConfig(t *testing.T) {
	k, g := loadK8s(t), loadEG(t)
	configs := serviceConfigs(t, "envoy-gateway/README.md")
	if len(configs) != 1 {
		t.Fatalf("%d configurations, want 1", len(configs))
	}
	cfg := parseServiceConfig(t, "envoy-gateway/README.md", configs[0])
	if len(cfg.Pools) != 1 {
		t.Fatalf("%d pools, want 1", len(cfg.Pools))
	}
	p := cfg.Pools[0]
	if p.Name != affinity.DefaultPoolName || p.Mode != "opaque" || p.Discovery == nil || p.Discovery.DNS == nil {
		t.Fatalf("pool %q mode %s: want one unnamed opaque pool with DNS discovery", p.Name, p.Mode)
	}
	checkWebPods(t, k, p.Discovery.DNS.Name, p.Discovery.DNS.Port)

	lb := g.lb.Spec.LoadBalancer
	var headers []string
	if eo := lb.EndpointOverride; eo != nil {
		for _, f := range eo.ExtractFrom {
			if f.Header != nil {
				headers = append(headers, *f.Header)
			}
		}
	}
	if h := p.Output.Header; h == "" || !slices.Equal(headers, []string{h}) {
		t.Errorf("endpointOverride reads headers %q; it should read only the one the service writes, output.header %q", headers, h)
	}
	if ch := lb.ConsistentHash; lb.Type != "ConsistentHash" || ch == nil || ch.Type != "Cookie" || ch.Cookie == nil || ch.Cookie.Name != p.Cookie.Name {
		t.Errorf("the fallback should hash the session cookie %q: %+v", p.Cookie.Name, lb)
	}
	if r := g.lb.Spec.Retry; r == nil || r.NumRetries < 1 || !slices.Contains(r.RetryOn.Triggers, "connect-failure") {
		t.Errorf("retry %+v: a connect failure should be retried, so the next host of the list is tried", r)
	}
}
