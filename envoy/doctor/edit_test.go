package doctor

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"
)

// The rules' cases edit a bootstrap of envoy/ decoded into maps and lists.
// These helpers fail the test when a step is missing, so that a case never
// edits nothing.

type tree = map[string]any

// bootstrap decodes a YAML of envoy/ (file is relative to it).
func bootstrap(t *testing.T, file string) tree {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", file))
	if err != nil {
		t.Fatal(err)
	}
	var y tree
	if err := yaml.Unmarshal(data, &y); err != nil {
		t.Fatal(err)
	}
	return y
}

// walk follows keys (strings) and list indexes (ints) to a mapping.
func walk(t *testing.T, v any, path ...any) tree {
	t.Helper()
	for _, step := range path {
		switch k := step.(type) {
		case string:
			m, ok := v.(tree)
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
	m, ok := v.(tree)
	if !ok {
		t.Fatalf("path %v is not a mapping", path)
	}
	return m
}

// connectionManager is the first listener's HTTP connection manager.
func connectionManager(t *testing.T, y tree) tree {
	return walk(t, y, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config")
}

// indexOfFilter is the position of the named HTTP filter.
func indexOfFilter(t *testing.T, y tree, name string) int {
	t.Helper()
	i := slices.IndexFunc(connectionManager(t, y)["http_filters"].([]any), func(f any) bool { return f.(tree)["name"] == name })
	if i < 0 {
		t.Fatalf("no http filter %q", name)
	}
	return i
}

// filterOf is the named HTTP filter's configuration, unwrapped from an
// ExtensionWithMatcher.
func filterOf(t *testing.T, y tree, name string) tree {
	tc := walk(t, connectionManager(t, y), "http_filters", indexOfFilter(t, y, name), "typed_config")
	if inner, ok := tc["extension_config"].(tree); ok {
		return walk(t, inner, "typed_config")
	}
	return tc
}

func dropFilter(t *testing.T, y tree, name string) {
	i := indexOfFilter(t, y, name)
	h := connectionManager(t, y)
	h["http_filters"] = slices.Delete(h["http_filters"].([]any), i, i+1)
}

func swapFilters(t *testing.T, y tree, a, b string) {
	i, j := indexOfFilter(t, y, a), indexOfFilter(t, y, b)
	f := connectionManager(t, y)["http_filters"].([]any)
	f[i], f[j] = f[j], f[i]
}

// virtualHost is the first virtual host of the first connection manager.
func virtualHost(t *testing.T, y tree) tree {
	return walk(t, connectionManager(t, y), "route_config", "virtual_hosts", 0)
}

// eachRoute calls edit with every route's "route" action and the route.
func eachRoute(t *testing.T, y tree, edit func(action, route tree)) {
	for _, r := range virtualHost(t, y)["routes"].([]any) {
		edit(walk(t, r, "route"), r.(tree))
	}
}

func routeNamed(t *testing.T, y tree, name string) tree {
	t.Helper()
	for _, r := range virtualHost(t, y)["routes"].([]any) {
		if r.(tree)["name"] == name {
			return r.(tree)
		}
	}
	t.Fatalf("no route %q", name)
	return nil
}

func clusterNamed(t *testing.T, y tree, name string) tree {
	t.Helper()
	for _, c := range walk(t, y, "static_resources")["clusters"].([]any) {
		if c.(tree)["name"] == name {
			return c.(tree)
		}
	}
	t.Fatalf("no cluster %q", name)
	return nil
}

// overrideHost is the override_host policy of cluster app.
func overrideHost(t *testing.T, y tree) tree {
	return walk(t, clusterNamed(t, y, "app"), "load_balancing_policy", "policies", 0, "typed_extension_config", "typed_config")
}

// provider is the jwt_authn provider "affinity".
func provider(t *testing.T, y tree) tree {
	return walk(t, filterOf(t, y, "envoy.filters.http.jwt_authn"), "providers", "affinity")
}

// member is a host of cluster app: 127.0.0.1:port, named.
type member struct {
	port int
	name string
}

// members gives cluster app the hosts listed, in place of its EDS file.
func members(t *testing.T, y tree, hosts ...member) {
	var endpoints []any
	for _, h := range hosts {
		endpoints = append(endpoints, tree{"endpoint": tree{"hostname": h.name,
			"address": tree{"socket_address": tree{"address": "127.0.0.1", "port_value": h.port}}}})
	}
	clusterNamed(t, y, "app")["load_assignment"] = tree{"cluster_name": "app", "endpoints": []any{tree{"lb_endpoints": endpoints}}}
}
