package extproc

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// TestEnvoyYAMLNamesTheContract reads every Envoy YAML under envoy/ and
// examples/ (the files users copy, the tests run, and the recipes) and
// checks that each names the wire contract of names.go: the ext_proc
// filter's attributes, metadata namespaces and initial metadata, and the
// override_host sources and selected_host_key. A renamed constant or a
// mistyped key in one YAML fails here rather than silently in production.
func TestEnvoyYAMLNamesTheContract(t *testing.T) {
	out, err := exec.Command("git", "-C", "..", "ls-files", "envoy/*.yaml", "envoy/**/*.yaml", "examples/*.yaml", "examples/**/*.yaml").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	files := strings.Fields(string(out))
	if len(files) == 0 {
		t.Fatal("no YAML found")
	}
	named := map[string][]string{} // contract name → files that name it
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		c := &contractCheck{t: t, file: f, named: named}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			c.walk(doc)
		}
	}
	// Every name Envoy must be told is named somewhere, and the files that
	// run the three modes name what their mode needs.
	for _, need := range []struct{ name, file string }{
		{MetadataNamespace, "envoy/opaque.yaml"},
		{DestinationKey, "envoy/opaque.yaml"},
		{ServedKey, "envoy/opaque.yaml"},
		{ClusterAttribute, "envoy/opaque.yaml"},
		{SourceAttribute, "envoy/opaque.yaml"},
		{MetadataNamespace, "envoy/verified.yaml"},
		{affinity.HostClaim, "envoy/verified.yaml"},
		{DestinationKey, "envoy/verified.yaml"},
		{ServedKey, "envoy/verified.yaml"},
		{MetadataNamespace, "envoy/native.yaml"},
		{DestinationKey, "envoy/native.yaml"},
		{DestinationKey, "examples/istio/override-host.yaml"},
		{ServedKey, "examples/istio/override-host.yaml"},
		{SourceAttribute, "examples/envoy-gateway/envoy-affinity.yaml"},
		// Failover marking (PrimaryHeader): verified mode through the
		// token's p claim, opaque mode through the decision's PrimaryKey.
		{PrimaryHeader, "envoy/verified.yaml"},
		{affinity.PrimaryClaim, "envoy/verified.yaml"},
		{CookieAttribute, "envoy/verified.yaml"},
		{PrimaryHeader, "envoy/opaque.yaml"},
		{PrimaryKey, "envoy/opaque.yaml"},
		{CookieAttribute, "envoy/opaque.yaml"},
	} {
		if !slices.Contains(named[need.name], need.file) {
			t.Errorf("%s does not name %q (named in %v)", need.file, need.name, named[need.name])
		}
	}
}

// contractCheck walks one YAML tree.
type contractCheck struct {
	t     *testing.T
	file  string
	named map[string][]string
}

func (c *contractCheck) name(n string) {
	if !slices.Contains(c.named[n], c.file) {
		c.named[n] = append(c.named[n], c.file)
	}
}

func (c *contractCheck) errorf(format string, args ...any) {
	c.t.Helper()
	c.t.Errorf(c.file+": "+format, args...)
}

var knownAttributes = []string{ClusterAttribute, SourceAttribute}

func (c *contractCheck) walk(n any) {
	switch v := n.(type) {
	case []any:
		for _, e := range v {
			c.walk(e)
		}
	case string:
		// A mistyped destination key anywhere (a header source, a route).
		if strings.HasPrefix(v, "x-gateway-destination") && v != DestinationKey && v != ServedKey {
			c.errorf("%q is neither %s nor %s", v, DestinationKey, ServedKey)
		}
	case map[string]any:
		if typ, _ := v["@type"].(string); strings.HasSuffix(typ, "ext_proc.v3.ExternalProcessor") {
			c.extProc(v)
		}
		// Envoy queues streams past the server's limit on one connection
		// unless its own limit is at most the server's.
		if h2, ok := v["http2_protocol_options"].(map[string]any); ok && strings.HasPrefix(c.file, "envoy/") {
			if n, _ := h2["max_concurrent_streams"].(int); n < 1 || n > MaxConcurrentStreams {
				c.errorf("http2_protocol_options.max_concurrent_streams %v: set it to at most %d", h2["max_concurrent_streams"], MaxConcurrentStreams)
			}
		}
		if srcs, ok := v["override_host_sources"].([]any); ok {
			for _, s := range srcs {
				if md, ok := s.(map[string]any)["metadata"].(map[string]any); ok {
					c.metadataSource(md)
				}
			}
		}
		if key, ok := v["selected_host_key"].(map[string]any); ok {
			if ns, path := metadataKey(key); ns != MetadataNamespace || !slices.Equal(path, []string{ServedKey}) {
				c.errorf("selected_host_key %s %v, want %s [%s]", ns, path, MetadataNamespace, ServedKey)
			} else {
				c.name(MetadataNamespace)
				c.name(ServedKey)
			}
		}
		// A route matching a verified token's host claim.
		if v["filter"] == JWTFilterName {
			if _, path := metadataKey(v); len(path) != 2 || path[1] != affinity.HostClaim {
				c.errorf("route matches jwt_authn payload %v, want [payload %s]", path, affinity.HostClaim)
			}
		}
		// The verified token's primary copied into PrimaryHeader.
		for _, ch := range asSlice(v["claim_to_headers"]) {
			m, _ := ch.(map[string]any)
			if m["claim_name"] != affinity.PrimaryClaim || m["header_name"] != PrimaryHeader {
				c.errorf("claim_to_headers %v, want claim %s into %s", m, affinity.PrimaryClaim, PrimaryHeader)
			} else {
				c.name(affinity.PrimaryClaim)
				c.name(PrimaryHeader)
			}
		}
		// A response header a matcher reads is the failover mark.
		if typ, _ := v["@type"].(string); strings.HasSuffix(typ, "HttpResponseHeaderMatchInput") {
			if v["header_name"] != PrimaryHeader {
				c.errorf("a matcher reads response header %v, want %s", v["header_name"], PrimaryHeader)
			}
		}
		// The opaque route's mark: a CEL expression on PrimaryKey.
		if h, ok := v["header"].(map[string]any); ok {
			if val, _ := h["value"].(string); strings.Contains(val, "%CEL(") && strings.Contains(val, MetadataNamespace) {
				if h["key"] != PrimaryHeader || !strings.Contains(val, "['"+PrimaryKey+"']") {
					c.errorf("route header %v = %q, want %s set from %s", h["key"], val, PrimaryHeader, PrimaryKey)
				} else {
					c.name(PrimaryHeader)
					c.name(PrimaryKey)
				}
			}
		}
		// Envoy Gateway's EnvoyExtensionPolicy: the attributes it asks for.
		if pm, ok := v["processingMode"].(map[string]any); ok {
			if req, ok := pm["request"].(map[string]any); ok {
				c.attributes(req["attributes"])
			}
		}
		for _, e := range v {
			c.walk(e)
		}
	}
}

// extProc checks one ext_proc filter's configuration.
func (c *contractCheck) extProc(f map[string]any) {
	c.attributes(f["request_attributes"])
	for _, a := range stringList(f["response_attributes"]) {
		if a != ClusterAttribute && a != CookieAttribute {
			c.errorf("response attribute %q is not one the service reads (%s, %s)", a, ClusterAttribute, CookieAttribute)
		}
		c.name(a)
	}
	if mo, ok := f["metadata_options"].(map[string]any); ok {
		for _, dir := range []string{"receiving_namespaces", "forwarding_namespaces"} {
			ns, ok := mo[dir].(map[string]any)
			if !ok {
				continue
			}
			if got := stringList(ns["untyped"]); !slices.Equal(got, []string{MetadataNamespace}) {
				c.errorf("ext_proc %s %v, want [%s]", dir, got, MetadataNamespace)
			} else {
				c.name(MetadataNamespace)
			}
		}
	}
	if gs, ok := f["grpc_service"].(map[string]any); ok {
		for _, md := range asSlice(gs["initial_metadata"]) {
			if key := md.(map[string]any)["key"]; key != PoolMetadataKey {
				c.errorf("ext_proc initial_metadata key %v, want %s", key, PoolMetadataKey)
			}
		}
	}
}

func (c *contractCheck) attributes(v any) {
	for _, a := range stringList(v) {
		if !slices.Contains(knownAttributes, a) {
			c.errorf("attribute %q is not one the service reads (%v)", a, knownAttributes)
		}
		c.name(a)
	}
}

// metadataSource checks an override_host metadata source: the decision in
// envoy.lb, or in verified mode the token's host claim in jwt_authn's
// payload.
func (c *contractCheck) metadataSource(md map[string]any) {
	ns, path := metadataKey(md)
	switch {
	case ns == MetadataNamespace && slices.Equal(path, []string{DestinationKey}):
		c.name(MetadataNamespace)
		c.name(DestinationKey)
	case ns == JWTFilterName && len(path) == 2 && path[1] == affinity.HostClaim:
		c.name(affinity.HostClaim)
	default:
		c.errorf("override_host reads metadata %s %v: want %s [%s] or %s [payload %s]", ns, path, MetadataNamespace, DestinationKey, JWTFilterName, affinity.HostClaim)
	}
}

// metadataKey reads an Envoy MetadataKey {key: NS, path: [{key: K}...]}.
func metadataKey(m map[string]any) (string, []string) {
	ns, _ := m["key"].(string)
	var path []string
	for _, p := range asSlice(m["path"]) {
		k, _ := p.(map[string]any)["key"].(string)
		path = append(path, k)
	}
	return ns, path
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func stringList(v any) []string {
	var out []string
	for _, e := range asSlice(v) {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
