package examples

import (
	"regexp"
	"slices"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// egAttributeRE is the pattern Envoy Gateway's CRD puts on
// processingMode.*.attributes (api/v1alpha1/ext_proc_types.go): no
// xds.cluster_name, so the pool cannot be chosen by cluster there.
var egAttributeRE = regexp.MustCompile(`^(connection\.|source\.|destination\.|request\.|response\.|upstream\.|xds\.route_)[a-z_1-9]*$`)

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

// TestEnvoyGatewayExtProcMatchesOpaque checks that the ext_proc filter
// Envoy Gateway builds from the policy (its translator: request/response
// present → headers SEND, no body, failOpen → failure_mode_allow,
// allowModeOverride, messageTimeout, attributes → request_attributes)
// has envoy/opaque.yaml's settings, except what Envoy Gateway cannot
// express and the recipe does not need: xds.cluster_name (one unnamed pool
// takes the route's requests) and the metadata namespaces (the decision
// travels in a header).
func TestEnvoyGatewayExtProcMatchesOpaque(t *testing.T) {
	g, opaque := loadEG(t), loadOpaque(t).extProc
	x := g.policy.Spec.ExtProc[0]
	pm := x.ProcessingMode
	if pm == nil {
		t.Fatal("no processingMode: Envoy Gateway would send nothing")
	}
	mode := func(present bool) extprocv3.ProcessingMode_HeaderSendMode {
		if present {
			return extprocv3.ProcessingMode_SEND
		}
		return extprocv3.ProcessingMode_SKIP
	}
	om := opaque.GetProcessingMode()
	if got := mode(pm.Request != nil); got != om.GetRequestHeaderMode() {
		t.Errorf("request headers %v, opaque.yaml %v", got, om.GetRequestHeaderMode())
	}
	if got := mode(pm.Response != nil); got != om.GetResponseHeaderMode() {
		t.Errorf("response headers %v, opaque.yaml %v (the Set-Cookie of a new session is written there)", got, om.GetResponseHeaderMode())
	}
	for _, o := range []*processingModeOptions{pm.Request, pm.Response} {
		if o != nil && o.Body != nil {
			t.Errorf("body mode %s: opaque.yaml sends no body", *o.Body)
		}
	}
	if pm.AllowModeOverride != opaque.GetAllowModeOverride() {
		t.Errorf("allowModeOverride %v, opaque.yaml %v", pm.AllowModeOverride, opaque.GetAllowModeOverride())
	}
	if x.FailOpen == nil || *x.FailOpen != opaque.GetFailureModeAllow() {
		t.Errorf("failOpen %v, opaque.yaml failure_mode_allow %v", x.FailOpen, opaque.GetFailureModeAllow())
	}
	if d, err := time.ParseDuration(x.MessageTimeout); err != nil || d != opaque.GetMessageTimeout().AsDuration() {
		t.Errorf("messageTimeout %q, opaque.yaml %v", x.MessageTimeout, opaque.GetMessageTimeout().AsDuration())
	}
	var wantAttrs []string
	for _, a := range opaque.GetRequestAttributes() {
		if egAttributeRE.MatchString(a) {
			wantAttrs = append(wantAttrs, a)
		}
	}
	if !slices.Equal(pm.Request.Attributes, wantAttrs) {
		t.Errorf("request attributes %v, want opaque.yaml's that Envoy Gateway allows: %v", pm.Request.Attributes, wantAttrs)
	}
	if x.Metadata != nil {
		t.Errorf("metadata %+v: the decision travels in a header here", x.Metadata)
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
