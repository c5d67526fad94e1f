// Package examples holds the deployment recipes (kubernetes/, istio/,
// envoy-gateway/) and the demo programs. Its tests check the recipes and
// docker-compose.yml against what the project really runs: the binary's
// flags and admin endpoints, the config loader, the Envoy protos, and the
// ext_proc settings of envoy/opaque.yaml that the end-to-end tests use.
package examples
