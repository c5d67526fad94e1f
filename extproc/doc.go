// Package extproc is the Envoy side of the service: it serves Envoy's
// external-processing gRPC stream, turns each request's headers into an
// affinity.Request, and turns the affinity.Decision back into what Envoy
// acts on: dynamic metadata naming the hosts for the override_host
// load-balancing policy, and the Set-Cookie header on the response. It makes
// no decision of its own.
package extproc
