// Package standalone runs the Envoy Gateway recipe (../envoy-affinity.yaml)
// through Envoy Gateway's own binary, built from its module at a pinned
// release (./eg), in its standalone mode: resources from files, the Envoy
// it translates them for started as a local process (the pinned Envoy
// binary). The test is the package's only content; it is a module of its
// own so that Envoy Gateway stays out of the product's go.mod.
package standalone
