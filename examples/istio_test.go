package examples

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlyhmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	overridehostv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
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
				var filters, clusters, early int
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
					case networkingv1alpha3.EnvoyFilter_NETWORK_FILTER:
						// The connection manager removes a client's copy of
						// the header the persistent session reads, early.
						early++
						var nf listenerv3.Filter
						if err := patchValue(p.GetPatch(), &nf); err != nil || p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_MERGE {
							t.Fatalf("patch %d: %v, not a MERGE of a network filter: %v", i, p.GetPatch().GetOperation(), err)
						}
						var hcm hcmv3.HttpConnectionManager
						if err := nf.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
							t.Fatalf("patch %d: not the HTTP connection manager: %v", i, err)
						}
						removes := ""
						for _, ext := range hcm.GetEarlyHeaderMutationExtensions() {
							var hm earlyhmv3.HeaderMutation
							if ext.GetTypedConfig().UnmarshalTo(&hm) == nil {
								for _, m := range hm.GetMutations() {
									removes += m.GetRemove()
								}
							}
						}
						if removes != sessionHeaderValue(t) {
							t.Errorf("patch %d: removes %q early, want the persistent session's header %q", i, removes, sessionHeaderValue(t))
						}
					default:
						t.Errorf("patch %d: applyTo %v", i, p.GetApplyTo())
					}
				}
				wantClusters, wantEarly := 0, 1
				if before == routerFilter {
					// Variant (b) patches the cluster; (a) routes by a header,
					// which a client's copy must not reach.
					wantClusters, wantEarly = 1, 0
				}
				if filters != 1 || clusters != wantClusters || early != wantEarly {
					t.Errorf("%d filter, %d cluster and %d connection manager patches, want 1, %d and %d", filters, clusters, early, wantClusters, wantEarly)
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

// sessionHeaderValue is the header variant (a)'s Service label names.
func sessionHeaderValue(t *testing.T) string {
	t.Helper()
	k := loadK8s(t)
	svc := mustDecode[service](t, find(t, readDocs(t, "istio/session-header.yaml"), "Service", k.web.Metadata.Name))
	return svc.Metadata.Labels[sessionHeaderLabel]
}
