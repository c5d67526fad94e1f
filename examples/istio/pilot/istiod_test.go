package pilot_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"
	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/test"
)

// docs reads a YAML file of the examples as documents, each kept as text.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []map[string]any
	for {
		var d map[string]any
		if err := dec.Decode(&d); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, d)
	}
}

// kubeKinds are the documents istiod reads from Kubernetes; the rest are
// Istio configuration.
var kubeKinds = map[string]bool{"Service": true, "EndpointSlice": true, "Pod": true, "Namespace": true}

// mesh is what istiod is given: the recipe's files and the objects a
// cluster would hold, with the running processes' ports.
type mesh struct {
	kube, istio []string
}

func (m *mesh) add(t *testing.T, d map[string]any) {
	t.Helper()
	data, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if kind, _ := d["kind"].(string); kubeKinds[kind] {
		m.kube = append(m.kube, string(data))
	} else {
		m.istio = append(m.istio, string(data))
	}
}

// addFile adds the documents of an examples file, those of the given kinds
// only when kinds are named.
func (m *mesh) addFile(t *testing.T, path string, kinds ...string) {
	t.Helper()
	for _, d := range docs(t, path) {
		name, _ := d["metadata"].(map[string]any)["name"].(string)
		kind, _ := d["kind"].(string)
		if len(kinds) == 0 || containsKind(kinds, kind+"/"+name) || containsKind(kinds, kind) {
			m.add(t, d)
		}
	}
}

func containsKind(kinds []string, k string) bool {
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}

// addEndpoints adds an EndpointSlice for each pod of a Service, at its
// address and port (one slice each: the pods' ports differ).
func (m *mesh) addEndpoints(t *testing.T, namespace, service, portName string, pods ...launch.Backend) {
	t.Helper()
	for i, pod := range pods {
		m.add(t, map[string]any{
			"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
			"metadata": map[string]any{"name": fmt.Sprintf("%s-%d", service, i), "namespace": namespace,
				"labels": map[string]any{"kubernetes.io/service-name": service}},
			"addressType": "IPv4",
			"endpoints":   []any{map[string]any{"addresses": []any{pod.IP}, "conditions": map[string]any{"ready": true}}},
			"ports":       []any{map[string]any{"name": portName, "port": pod.Port, "protocol": "TCP"}},
		})
	}
}

// generated is what istiod generates for one proxy.
type generated struct {
	listeners []*listenerv3.Listener
	clusters  []*clusterv3.Cluster
	routes    []*routev3.RouteConfiguration
	endpoints []*endpointv3.ClusterLoadAssignment
}

// istiod runs Istio's own discovery server in process (as Istio's tests do,
// without a cluster) on the mesh and generates the configuration of the
// proxy; persistentSession sets PILOT_ENABLE_PERSISTENT_SESSION_FILTER.
func istiod(t *testing.T, m *mesh, proxy *model.Proxy, persistentSession bool) generated {
	t.Helper()
	test.SetAtomicBoolForTest(t, features.EnablePersistentSessionFilter, persistentSession)
	s := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		ConfigString:           strings.Join(m.istio, "---\n"),
		KubernetesObjectString: strings.Join(m.kube, "---\n"),
	})
	p := s.SetupProxy(proxy)
	g := generated{listeners: s.Listeners(p), clusters: s.Clusters(p), endpoints: s.Endpoints(p)}
	g.routes = s.RoutesFromListeners(p, g.listeners)
	return g
}

// istioOnly tells whether an HTTP filter is one of Istio's own proxy's
// extensions, which the upstream Envoy binary does not have.
func istioOnly(name string, tc *anypb.Any) bool {
	switch {
	case tc == nil:
		return false
	case strings.HasPrefix(name, "istio."), strings.HasPrefix(tc.GetTypeUrl(), "type.googleapis.com/istio."):
		return true
	}
	// Istio's proxy extensions configured through a TypedStruct.
	return strings.HasSuffix(tc.GetTypeUrl(), "udpa.type.v1.TypedStruct") &&
		(bytes.Contains(tc.GetValue(), []byte("istio")) || bytes.Contains(tc.GetValue(), []byte("metadataexchange")))
}

// bootstrap is a static Envoy bootstrap holding the listener named
// listener of what istiod generated, served on 127.0.0.1:port, with its
// route configuration inline, the clusters with their endpoints inline,
// and Istio's own proxy extensions left out (it reports their names).
func bootstrap(t *testing.T, g generated, listener string, port, adminPort int) ([]byte, []string) {
	t.Helper()
	routes := map[string]*routev3.RouteConfiguration{}
	for _, r := range g.routes {
		routes[r.GetName()] = r
	}
	eds := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, e := range g.endpoints {
		eds[e.GetClusterName()] = e
	}
	var dropped []string
	var l *listenerv3.Listener
	for _, x := range g.listeners {
		if x.GetName() == listener {
			l = x
		}
	}
	if l == nil {
		var names []string
		for _, x := range g.listeners {
			names = append(names, x.GetName())
		}
		t.Fatalf("istiod generated no listener %s (%v)", listener, names)
	}
	l.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
	l.BindToPort = nil
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			hcm := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig().MessageIs(hcm) {
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				if rds := hcm.GetRds(); rds != nil {
					rc, ok := routes[rds.GetRouteConfigName()]
					if !ok {
						t.Fatalf("no route configuration %s", rds.GetRouteConfigName())
					}
					hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
				}
				var kept []*hcmv3.HttpFilter
				for _, hf := range hcm.GetHttpFilters() {
					if istioOnly(hf.GetName(), hf.GetTypedConfig()) {
						dropped = append(dropped, hf.GetName())
						continue
					}
					kept = append(kept, hf)
				}
				hcm.HttpFilters = kept
				a, err := anypb.New(hcm)
				if err != nil {
					t.Fatal(err)
				}
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
			}
		}
	}
	var clusters []*clusterv3.Cluster
	for _, c := range g.clusters {
		if c.GetType() == clusterv3.Cluster_EDS {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
			c.EdsClusterConfig = nil
			c.LoadAssignment = eds[c.GetName()]
			if c.LoadAssignment == nil {
				c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: c.GetName()}
			}
		}
		// Istio's mutual TLS takes its certificates from its agent's SDS,
		// which does not run here (and the test's workloads carry no
		// tlsMode label, so Istio chooses plain text for them anyway).
		c.TransportSocketMatches = nil
		c.TransportSocket = nil
		var filters []*clusterv3.Filter
		for _, f := range c.GetFilters() {
			if istioOnly(f.GetName(), f.GetTypedConfig()) {
				dropped = append(dropped, c.GetName()+": "+f.GetName())
				continue
			}
			filters = append(filters, f)
		}
		c.Filters = filters
		clusters = append(clusters, c)
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: "istio-test", Cluster: "istio-test"},
		Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(adminPort)}}}}},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Listeners: []*listenerv3.Listener{l}, Clusters: clusters},
	}
	data, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return data, dropped
}
