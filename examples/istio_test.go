package examples

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	statefulsessionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/stateful_session/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	headerstatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/header/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	overridehostv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
)

// Wire names of the Istio recipe.
const (
	hcmFilter            = "envoy.filters.network.http_connection_manager"
	extProcFilter        = extproc.FilterName
	statefulSessionName  = "envoy.filters.http.stateful_session" // Istio's util.StatefulSessionFilter
	routerFilter         = "envoy.filters.http.router"
	sessionHeaderLabel   = "istio.io/persistent-session-header"
	clusterDomainSuffix  = ".svc.cluster.local"
	istioGatewaySelector = "ingressgateway"
)

// extProcFields are the ExternalProcessor settings a recipe must share with
// envoy/opaque.yaml, which the end-to-end tests run: what the service sees
// and may answer depends on them.
var extProcFields = []protoreflect.Name{
	"processing_mode", "failure_mode_allow", "allow_mode_override", "metadata_options", "request_attributes", "message_timeout",
}

// opaqueYAML is envoy/opaque.yaml decoded: the ext_proc filter and the
// app cluster's override_host policy the end-to-end tests run.
type opaqueYAML struct {
	extProc      *extprocv3.ExternalProcessor
	overrideHost *overridehostv3.OverrideHost
}

func loadOpaque(t *testing.T) opaqueYAML {
	t.Helper()
	data, err := os.ReadFile("../envoy/opaque.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := yamlToProto(data, &b); err != nil {
		t.Fatalf("envoy/opaque.yaml: %v", err)
	}
	var out opaqueYAML
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				for _, hf := range hcm.GetHttpFilters() {
					if hf.GetName() == extProcFilter {
						out.extProc = &extprocv3.ExternalProcessor{}
						if err := hf.GetTypedConfig().UnmarshalTo(out.extProc); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
		}
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == "app" {
			out.overrideHost = overrideHostOf(t, c)
		}
	}
	if out.extProc == nil || out.overrideHost == nil {
		t.Fatal("envoy/opaque.yaml: no ext_proc filter or no override_host policy on cluster app")
	}
	return out
}

// overrideHostOf returns a cluster's override_host policy (the first LB
// policy).
func overrideHostOf(t *testing.T, c *clusterv3.Cluster) *overridehostv3.OverrideHost {
	t.Helper()
	ps := c.GetLoadBalancingPolicy().GetPolicies()
	if len(ps) != 1 {
		t.Fatalf("cluster %s: %d load-balancing policies, want one", c.GetName(), len(ps))
	}
	var oh overridehostv3.OverrideHost
	if err := ps[0].GetTypedExtensionConfig().GetTypedConfig().UnmarshalTo(&oh); err != nil {
		t.Fatalf("cluster %s: %v", c.GetName(), err)
	}
	if err := oh.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	return &oh
}

// sameFields reports the named fields on which a and b differ.
func sameFields(a, b proto.Message, names []protoreflect.Name) []string {
	var diff []string
	ra, rb := a.ProtoReflect(), b.ProtoReflect()
	for _, n := range names {
		fd := ra.Descriptor().Fields().ByName(n)
		if fd == nil {
			diff = append(diff, string(n)+" (no such field)")
			continue
		}
		if !ra.Get(fd).Equal(rb.Get(fd)) {
			diff = append(diff, fmt.Sprintf("{%s} here, {%s} in opaque.yaml", fieldText(rb, fd), fieldText(ra, fd)))
		}
	}
	return diff
}

// fieldText prints one field of a message in text format.
func fieldText(m protoreflect.Message, fd protoreflect.FieldDescriptor) string {
	only := m.Type().New()
	if m.Has(fd) {
		only.Set(fd, m.Get(fd))
	}
	return prototext.MarshalOptions{}.Format(only.Interface())
}

// istioFilter is one EnvoyFilter of the recipe with its decoded spec.
type istioFilter struct {
	doc
	spec *networkingv1alpha3.EnvoyFilter
}

func loadIstioFilters(t *testing.T, file string) []istioFilter {
	t.Helper()
	var out []istioFilter
	for _, d := range readDocs(t, file) {
		if d.kind != "EnvoyFilter" {
			continue
		}
		spec, err := envoyFilterSpec(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, istioFilter{doc: d, spec: spec})
	}
	if len(out) != 2 {
		t.Fatalf("%s: %d EnvoyFilters, want one for the gateway and one for sidecars", file, len(out))
	}
	return out
}

// patchValue decodes a patch's value (a Struct) into m with protojson.
func patchValue(p *networkingv1alpha3.EnvoyFilter_Patch, m proto.Message) error {
	j, err := protojson.Marshal(p.GetValue())
	if err != nil {
		return err
	}
	return protojson.Unmarshal(j, m)
}

// istioCluster is the name Istio gives the outbound cluster of a Service
// port.
func istioCluster(svc service, port int) string {
	return fmt.Sprintf("outbound|%d||%s.%s%s", port, svc.Metadata.Name, svc.Metadata.Namespace, clusterDomainSuffix)
}

// TestIstioEnvoyFilters decodes every patch of both Istio variants into
// Istio's EnvoyFilter proto and Envoy's (HttpFilter and its
// ExternalProcessor, Cluster and its OverrideHost policy), and checks them
// against the Kubernetes recipe and envoy/opaque.yaml: the gRPC cluster is
// Istio's name for the envoy-affinity Service's grpc port, the ext_proc
// settings are opaque.yaml's field by field, the override_host policy is
// opaque.yaml's, and the filter goes where the variant needs it.
func TestIstioEnvoyFilters(t *testing.T) {
	k := loadK8s(t)
	opaque := loadOpaque(t)
	grpcCluster := istioCluster(k.service, servicePortNamed(t, k.service, "grpc").Port)
	webPort := servicePortNamed(t, k.web, "http").Port
	webHost := k.web.Metadata.Name + "." + k.web.Metadata.Namespace + clusterDomainSuffix

	for file, before := range map[string]string{
		"istio/session-header.yaml": statefulSessionName,
		"istio/override-host.yaml":  routerFilter,
	} {
		contexts := map[networkingv1alpha3.EnvoyFilter_PatchContext]bool{}
		for _, f := range loadIstioFilters(t, file) {
			t.Run(filepath.Base(file)+"/"+f.name, func(t *testing.T) {
				ctx := f.spec.GetConfigPatches()[0].GetMatch().GetContext()
				contexts[ctx] = true
				switch ctx {
				case networkingv1alpha3.EnvoyFilter_GATEWAY:
					if f.spec.GetWorkloadSelector().GetLabels()["istio"] != istioGatewaySelector {
						t.Errorf("the gateway filter should select the ingress gateway, selects %v", f.spec.GetWorkloadSelector())
					}
				case networkingv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND:
					if len(f.spec.GetWorkloadSelector().GetLabels()) == 0 {
						t.Error("a sidecar filter without workloadSelector patches every workload of its namespace")
					}
				default:
					t.Fatalf("context %v: want GATEWAY or SIDECAR_OUTBOUND", ctx)
				}
				var filters, clusters int
				for i, p := range f.spec.GetConfigPatches() {
					if p.GetMatch().GetContext() != ctx {
						t.Errorf("patch %d: context %v, the filter's first patch has %v", i, p.GetMatch().GetContext(), ctx)
					}
					switch p.GetApplyTo() {
					case networkingv1alpha3.EnvoyFilter_HTTP_FILTER:
						filters++
						l := p.GetMatch().GetListener()
						if l.GetFilterChain().GetFilter().GetName() != hcmFilter || l.GetFilterChain().GetFilter().GetSubFilter().GetName() != before {
							t.Errorf("patch %d: matches %v, want the HTTP filter %s of %s", i, l.GetFilterChain().GetFilter(), before, hcmFilter)
						}
						if p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE {
							t.Errorf("patch %d: %v, want INSERT_BEFORE %s", i, p.GetPatch().GetOperation(), before)
						}
						if ctx == networkingv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND && int(l.GetPortNumber()) != webPort {
							t.Errorf("patch %d: sidecar listener port %d, web's Service port is %d", i, l.GetPortNumber(), webPort)
						}
						xp := extProcOf(t, p)
						if got := xp.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != grpcCluster {
							t.Errorf("patch %d: grpc cluster %q, Istio names the envoy-affinity Service's grpc port %q", i, got, grpcCluster)
						}
						if d := sameFields(opaque.extProc, xp, extProcFields); len(d) > 0 {
							t.Errorf("patch %d: ext_proc settings differ from envoy/opaque.yaml:\n%s", i, strings.Join(d, "\n"))
						}
						if !proto.Equal(xp.GetGrpcService().GetTimeout(), opaque.extProc.GetGrpcService().GetTimeout()) {
							t.Errorf("patch %d: grpc_service.timeout %v, opaque.yaml has %v", i, xp.GetGrpcService().GetTimeout(), opaque.extProc.GetGrpcService().GetTimeout())
						}
					case networkingv1alpha3.EnvoyFilter_CLUSTER:
						clusters++
						m := p.GetMatch().GetCluster()
						if m.GetService() != webHost || int(m.GetPortNumber()) != webPort || p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_MERGE {
							t.Errorf("patch %d: %v %v, want MERGE into %s port %d", i, p.GetPatch().GetOperation(), m, webHost, webPort)
						}
						var c clusterv3.Cluster
						if err := patchValue(p.GetPatch(), &c); err != nil {
							t.Fatalf("patch %d: not a Cluster: %v", i, err)
						}
						if oh := overrideHostOf(t, &c); !proto.Equal(oh, opaque.overrideHost) {
							t.Errorf("patch %d: override_host policy differs from envoy/opaque.yaml's cluster app:\n%v\n%v", i, oh, opaque.overrideHost)
						}
					default:
						t.Errorf("patch %d: applyTo %v", i, p.GetApplyTo())
					}
				}
				wantClusters := 0
				if before == routerFilter {
					wantClusters = 1 // variant (b) patches the cluster; (a) needs no patch
				}
				if filters != 1 || clusters != wantClusters {
					t.Errorf("%d filter and %d cluster patches, want 1 and %d", filters, clusters, wantClusters)
				}
			})
		}
		if !contexts[networkingv1alpha3.EnvoyFilter_GATEWAY] || !contexts[networkingv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND] {
			t.Errorf("%s: want a GATEWAY and a SIDECAR_OUTBOUND filter, have %v", file, slices.Collect(maps.Keys(contexts)))
		}
	}
}

// extProcOf decodes an HTTP_FILTER patch's value into the ext_proc filter.
func extProcOf(t *testing.T, p *networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch) *extprocv3.ExternalProcessor {
	t.Helper()
	var hf hcmv3.HttpFilter
	if err := patchValue(p.GetPatch(), &hf); err != nil {
		t.Fatalf("not an HttpFilter: %v", err)
	}
	if hf.GetName() != extProcFilter {
		t.Fatalf("filter %q, want %s", hf.GetName(), extProcFilter)
	}
	var xp extprocv3.ExternalProcessor
	if err := hf.GetTypedConfig().UnmarshalTo(&xp); err != nil {
		t.Fatalf("typed_config: %v", err)
	}
	if err := xp.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	return &xp
}

// TestIstioSessionHeaderService checks variant (a)'s Service: it is the
// app's Service of the Kubernetes recipe, with the label naming the header.
func TestIstioSessionHeaderService(t *testing.T) {
	k := loadK8s(t)
	svc := mustDecode[service](t, find(t, readDocs(t, "istio/session-header.yaml"), "Service", k.web.Metadata.Name))
	if svc.Metadata.Namespace != k.web.Metadata.Namespace || !maps.Equal(svc.Spec.Selector, k.web.Spec.Selector) || !slices.Equal(svc.Spec.Ports, k.web.Spec.Ports) {
		t.Errorf("the labelled Service differs from %s in examples/kubernetes/web.yaml beyond its labels", k.web.Metadata.Name)
	}
	if svc.Metadata.Labels[sessionHeaderLabel] == "" {
		t.Errorf("no %s label", sessionHeaderLabel)
	}
}

// TestIstioReadmeConfigs loads the service configurations of the Istio
// README: one pool named after Istio's cluster for web, opaque, its hosts
// from web's headless Service; variant (a) writes the header the Service
// label names, variant (b) uses the cookie the fallback policy hashes.
func TestIstioReadmeConfigs(t *testing.T) {
	k := loadK8s(t)
	cluster := istioCluster(k.web, servicePortNamed(t, k.web, "http").Port)
	svc := mustDecode[service](t, find(t, readDocs(t, "istio/session-header.yaml"), "Service", k.web.Metadata.Name))
	label := svc.Metadata.Labels[sessionHeaderLabel]
	var header, plain int
	for i, text := range serviceConfigs(t, "istio/README.md") {
		cfg := parseServiceConfig(t, fmt.Sprintf("istio/README.md config %d", i), text)
		if len(cfg.Pools) != 1 {
			t.Fatalf("config %d: %d pools, want 1", i, len(cfg.Pools))
		}
		p := cfg.Pools[0]
		if p.Name != cluster || p.Mode != "opaque" || p.Discovery == nil || p.Discovery.DNS == nil {
			t.Errorf("config %d: pool %q mode %s: want %q, opaque, DNS discovery", i, p.Name, p.Mode, cluster)
			continue
		}
		checkWebPods(t, k, p.Discovery.DNS.Name, p.Discovery.DNS.Port)
		switch h := p.Output.StatefulSessionHeader; {
		case h != "":
			header++
			if h != label {
				t.Errorf("config %d: output.stateful_session_header %q, the Service label names %q", i, h, label)
			}
		case p.Output == (affinity.OutputConfig{}):
			plain++
			if want := fallbackCookie(t); p.Cookie.Name != want {
				t.Errorf("config %d: cookie %q, the fallback policy hashes %q", i, p.Cookie.Name, want)
			}
		default:
			t.Errorf("config %d: output %+v", i, p.Output)
		}
	}
	if header != 1 || plain != 1 {
		t.Errorf("want one config per variant, have %d with the header and %d without", header, plain)
	}
}

// fallbackCookie is the cookie the Maglev fallback of variant (b) hashes.
func fallbackCookie(t *testing.T) string {
	t.Helper()
	var name string
	for _, f := range loadIstioFilters(t, "istio/override-host.yaml") {
		for _, p := range f.spec.GetConfigPatches() {
			if p.GetApplyTo() != networkingv1alpha3.EnvoyFilter_CLUSTER {
				continue
			}
			var c clusterv3.Cluster
			if err := patchValue(p.GetPatch(), &c); err != nil {
				t.Fatal(err)
			}
			fb := overrideHostOf(t, &c).GetFallbackPolicy().GetPolicies()[0].GetTypedExtensionConfig().GetTypedConfig()
			var mg maglevv3.Maglev
			if err := fb.UnmarshalTo(&mg); err != nil {
				t.Fatalf("the fallback policy is not Maglev: %v", err)
			}
			hp := mg.GetConsistentHashingLbConfig().GetHashPolicy()
			if len(hp) != 1 || hp[0].GetCookie() == nil {
				t.Fatalf("the fallback should hash the session cookie, hashes %v", hp)
			}
			name = hp[0].GetCookie().GetName()
		}
	}
	return name
}

// TestIstioPatchesAcceptedByEnvoy applies each EnvoyFilter's patches, the
// way istiod does (insert before the named HTTP filter, proto-merge into
// the named cluster), to an Istio-shaped configuration (Istio's filter
// order with its empty stateful_session filter, the per-route header state
// Istio derives from the Service label, Istio's default retry policy and
// LEAST_REQUEST clusters), then asks Envoy 1.40 to validate the result.
func TestIstioPatchesAcceptedByEnvoy(t *testing.T) {
	k := loadK8s(t)
	svc := mustDecode[service](t, find(t, readDocs(t, "istio/session-header.yaml"), "Service", k.web.Metadata.Name))
	label := svc.Metadata.Labels[sessionHeaderLabel]
	webCluster := istioCluster(k.web, servicePortNamed(t, k.web, "http").Port)
	grpcCluster := istioCluster(k.service, servicePortNamed(t, k.service, "grpc").Port)
	for _, file := range []string{"istio/session-header.yaml", "istio/override-host.yaml"} {
		for _, f := range loadIstioFilters(t, file) {
			t.Run(filepath.Base(file)+"/"+f.name, func(t *testing.T) {
				b, hcm := istioShaped(t, webCluster, grpcCluster, label)
				for i, p := range f.spec.GetConfigPatches() {
					switch p.GetApplyTo() {
					case networkingv1alpha3.EnvoyFilter_HTTP_FILTER:
						var hf hcmv3.HttpFilter
						if err := patchValue(p.GetPatch(), &hf); err != nil {
							t.Fatal(err)
						}
						sub := p.GetMatch().GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName()
						at := slices.IndexFunc(hcm.HttpFilters, func(h *hcmv3.HttpFilter) bool { return h.GetName() == sub })
						if at < 0 {
							t.Fatalf("patch %d: no filter %s to insert before (Istio adds stateful_session only with PILOT_ENABLE_PERSISTENT_SESSION_FILTER=true)", i, sub)
						}
						hcm.HttpFilters = slices.Insert(hcm.HttpFilters, at, &hf)
					case networkingv1alpha3.EnvoyFilter_CLUSTER:
						var patch clusterv3.Cluster
						if err := patchValue(p.GetPatch(), &patch); err != nil {
							t.Fatal(err)
						}
						m := p.GetMatch().GetCluster()
						name := fmt.Sprintf("outbound|%d||%s", m.GetPortNumber(), m.GetService())
						at := slices.IndexFunc(b.StaticResources.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == name })
						if at < 0 {
							t.Fatalf("patch %d: no cluster %s", i, name)
						}
						proto.Merge(b.StaticResources.Clusters[at], &patch)
					}
				}
				b.StaticResources.Listeners[0].FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)}
				validateWithEnvoy(t, b)
			})
		}
	}
}

// istioShaped builds the parts of an Istio gateway or sidecar
// configuration the patches touch: one HTTP listener routing to web's
// cluster, and the clusters of web and of envoy-affinity.
func istioShaped(t *testing.T, webCluster, grpcCluster, sessionHeader string) (*bootstrapv3.Bootstrap, *hcmv3.HttpConnectionManager) {
	t.Helper()
	perRoute := &statefulsessionv3.StatefulSessionPerRoute{Override: &statefulsessionv3.StatefulSessionPerRoute_StatefulSession{
		StatefulSession: &statefulsessionv3.StatefulSession{SessionState: &corev3.TypedExtensionConfig{
			Name:        "envoy.http.stateful_session.header",
			TypedConfig: mustAny(t, &headerstatev3.HeaderBasedSessionState{Name: sessionHeader}),
		}},
	}}
	route := &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: webCluster},
			RetryPolicy: &routev3.RetryPolicy{
				NumRetries: wrapperspb.UInt32(2),
				RetryOn:    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
				RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
					Name:       "envoy.retry_host_predicates.previous_hosts",
					ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(t, &previoushostsv3.PreviousHostsPredicate{})},
				}},
				HostSelectionRetryMaxAttempts: 5,
			},
		}},
		TypedPerFilterConfig: map[string]*anypb.Any{statefulSessionName: mustAny(t, perRoute)},
	}
	filter := func(name string, m proto.Message) *hcmv3.HttpFilter {
		return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, m)}}
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_0.0.0.0_80",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name:         "80",
			VirtualHosts: []*routev3.VirtualHost{{Name: "web", Domains: []string{"*"}, Routes: []*routev3.Route{route}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			filter("envoy.filters.http.fault", &faultv3.HTTPFault{}),
			filter("envoy.filters.http.cors", &corsv3.Cors{}),
			filter(statefulSessionName, &statefulsessionv3.StatefulSession{}),
			filter(routerFilter, &routerv3.Router{}),
		},
	}
	endpoint := func(cluster, ip string, port uint32) *endpointv3.ClusterLoadAssignment {
		return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
			}}}}},
		}}}}}
	}
	b := &bootstrapv3.Bootstrap{StaticResources: &bootstrapv3.Bootstrap_StaticResources{
		Listeners: []*listenerv3.Listener{{
			Name: "0.0.0.0_80",
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15080},
			}}},
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: hcmFilter}}}},
		}},
		Clusters: []*clusterv3.Cluster{
			{
				Name:                 webCluster,
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
				ConnectTimeout:       durationpb.New(10 * time.Second),
				LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
				// What Istio sets for a Service with a persistent-session label.
				CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{OverrideHostStatus: &corev3.HealthStatusSet{Statuses: []corev3.HealthStatus{
					corev3.HealthStatus_HEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_DEGRADED,
				}}},
				LoadAssignment: endpoint(webCluster, "10.0.0.1", 8080),
			},
			{
				Name:                 grpcCluster,
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
				ConnectTimeout:       durationpb.New(10 * time.Second),
				LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
				TypedExtensionProtocolOptions: map[string]*anypb.Any{
					"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, &upstreamhttpv3.HttpProtocolOptions{
						UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
							ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
						}},
					}),
				},
				LoadAssignment: endpoint(grpcCluster, "10.0.0.2", 9002),
			},
		},
	}}
	return b, hcm
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// validateWithEnvoy runs `envoy --mode validate` on a bootstrap: Envoy
// builds every listener, filter, route and cluster without serving.
func validateWithEnvoy(t *testing.T, b *bootstrapv3.Bootstrap) {
	t.Helper()
	j, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "envoy.json")
	if err := os.WriteFile(path, j, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bins.Envoy, "--mode", "validate", "--disable-hot-restart", "-l", "warning", "-c", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("Envoy refuses the patched configuration: %v\n%s", err, out)
	}
}
