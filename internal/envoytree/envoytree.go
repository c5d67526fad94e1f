// Package envoytree edits an Envoy bootstrap decoded from YAML into maps and
// lists, for tests that break one setting of a shipped configuration and
// look for the doctor's finding. Every step fails the test when the part it
// looks for is missing, so that a case never edits nothing. Only tests
// import it.
package envoytree

import (
	"slices"
	"testing"
)

// Tree is a YAML mapping decoded into maps and lists.
type Tree = map[string]any

// Dig follows keys (strings) and list indexes (ints) from v to a mapping.
func Dig(t *testing.T, v any, path ...any) Tree {
	t.Helper()
	for _, step := range path {
		switch k := step.(type) {
		case string:
			m, ok := v.(Tree)
			if !ok || m[k] == nil {
				t.Fatalf("no %q in the YAML (path %v)", k, path)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("no entry %d in the YAML (path %v)", k, path)
			}
			v = l[k]
		}
	}
	m, ok := v.(Tree)
	if !ok {
		t.Fatalf("path %v is not a mapping", path)
	}
	return m
}

// ConnectionManager is the first listener's HTTP connection manager.
func ConnectionManager(t *testing.T, y Tree) Tree {
	t.Helper()
	return Dig(t, y, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config")
}

// FilterIndex is the position of the named HTTP filter.
func FilterIndex(t *testing.T, y Tree, name string) int {
	t.Helper()
	i := slices.IndexFunc(ConnectionManager(t, y)["http_filters"].([]any), func(f any) bool { return f.(Tree)["name"] == name })
	if i < 0 {
		t.Fatalf("no http filter %q", name)
	}
	return i
}

// FilterConfig is the named HTTP filter's configuration, unwrapped from an
// ExtensionWithMatcher.
func FilterConfig(t *testing.T, y Tree, name string) Tree {
	t.Helper()
	tc := Dig(t, ConnectionManager(t, y), "http_filters", FilterIndex(t, y, name), "typed_config")
	if inner, ok := tc["extension_config"].(Tree); ok {
		return Dig(t, inner, "typed_config")
	}
	return tc
}

// RemoveFilter takes the named HTTP filter out.
func RemoveFilter(t *testing.T, y Tree, name string) {
	t.Helper()
	i := FilterIndex(t, y, name)
	h := ConnectionManager(t, y)
	h["http_filters"] = slices.Delete(h["http_filters"].([]any), i, i+1)
}

// RemoveExtProcs takes out every ext_proc HTTP filter, wrapped in an
// ExtensionWithMatcher or not (a YAML may have a deciding and a
// response-only one).
func RemoveExtProcs(t *testing.T, y Tree) {
	t.Helper()
	h := ConnectionManager(t, y)
	h["http_filters"] = slices.DeleteFunc(h["http_filters"].([]any), func(f any) bool {
		tc, _ := f.(Tree)["typed_config"].(Tree)
		if inner, ok := tc["extension_config"].(Tree); ok {
			tc, _ = inner["typed_config"].(Tree)
		}
		return tc["@type"] == "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
	})
}

// SwapFilters swaps the places of two HTTP filters.
func SwapFilters(t *testing.T, y Tree, a, b string) {
	t.Helper()
	i, j := FilterIndex(t, y, a), FilterIndex(t, y, b)
	f := ConnectionManager(t, y)["http_filters"].([]any)
	f[i], f[j] = f[j], f[i]
}

// VirtualHost is the first virtual host of the first connection manager.
func VirtualHost(t *testing.T, y Tree) Tree {
	t.Helper()
	return Dig(t, ConnectionManager(t, y), "route_config", "virtual_hosts", 0)
}

// Routes are the first virtual host's routes.
func Routes(t *testing.T, y Tree) []any {
	t.Helper()
	return VirtualHost(t, y)["routes"].([]any)
}

// RouteNamed is the first virtual host's route of that name.
func RouteNamed(t *testing.T, y Tree, name string) Tree {
	t.Helper()
	for _, r := range Routes(t, y) {
		if r.(Tree)["name"] == name {
			return r.(Tree)
		}
	}
	t.Fatalf("no route %q", name)
	return nil
}

// ClusterNamed is the static cluster of that name.
func ClusterNamed(t *testing.T, y Tree, name string) Tree {
	t.Helper()
	for _, c := range Dig(t, y, "static_resources")["clusters"].([]any) {
		if c.(Tree)["name"] == name {
			return c.(Tree)
		}
	}
	t.Fatalf("no cluster %q", name)
	return nil
}

// OverrideHost is the override_host load-balancing policy of the cluster.
func OverrideHost(t *testing.T, y Tree, cluster string) Tree {
	t.Helper()
	return Dig(t, ClusterNamed(t, y, cluster), "load_balancing_policy", "policies", 0, "typed_extension_config", "typed_config")
}

// Provider is the jwt_authn filter's provider of that name.
func Provider(t *testing.T, y Tree, name string) Tree {
	t.Helper()
	return Dig(t, FilterConfig(t, y, "envoy.filters.http.jwt_authn"), "providers", name)
}
