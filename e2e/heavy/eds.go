package main

import (
	"fmt"
	"os"
	"strings"
)

// writeEDSVariant writes the Envoy YAML at src, whose cluster "app" has
// static endpoints and round robin, to dst with the cluster's hosts taken
// from the stack's endpoints file (EDS from a file, as envoy/ does) and
// LEAST_REQUEST: the stack can then add a host to Envoy as it adds one to
// the service.
func writeEDSVariant(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	yaml := string(data)
	const from, to = "    type: STATIC\n", "    lb_policy: ROUND_ROBIN\n"
	a := strings.Index(yaml, from)
	z := strings.Index(yaml, to)
	if a < 0 || z < a {
		return fmt.Errorf("%s: no static cluster ending in round robin to turn into EDS", src)
	}
	eds := "    type: EDS\n    connect_timeout: 0.25s\n" +
		"    eds_cluster_config:\n      service_name: app\n      eds_config:\n        path_config_source:\n" +
		"          path: app-endpoints.yaml\n          watched_directory: {path: .}\n" +
		"    lb_policy: LEAST_REQUEST\n"
	// File-based EDS needs a node identity.
	out := "node: {id: ingress-1, cluster: ingress}\n" + yaml[:a] + eds + yaml[z+len(to):]
	return os.WriteFile(dst, []byte(out), 0o600)
}
