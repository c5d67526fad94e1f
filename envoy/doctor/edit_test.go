package doctor

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/envoytree"

	"gopkg.in/yaml.v3"
)

// The rules' cases edit a bootstrap of envoy/ decoded into maps and lists.
// These helpers fail the test when a step is missing, so that a case never
// edits nothing.

type tree = envoytree.Tree

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

// eachRoute calls edit with every route's "route" action and the route.
func eachRoute(t *testing.T, y tree, edit func(action, route tree)) {
	for _, r := range envoytree.VirtualHost(t, y)["routes"].([]any) {
		edit(envoytree.Dig(t, r, "route"), r.(tree))
	}
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
	envoytree.ClusterNamed(t, y, "app")["load_assignment"] = tree{"cluster_name": "app", "endpoints": []any{tree{"lb_endpoints": endpoints}}}
}

// overrideHost is the override_host policy of cluster app.
func overrideHost(t *testing.T, y tree) tree { return envoytree.OverrideHost(t, y, "app") }

// provider is the jwt_authn provider "affinity".
func provider(t *testing.T, y tree) tree { return envoytree.Provider(t, y, "affinity") }
