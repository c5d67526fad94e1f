// Package extproc is the Envoy side of the service: it serves Envoy's
// external-processing gRPC stream, turns each request's headers into an
// affinity.Request, and turns the affinity.Decision back into what Envoy
// acts on: dynamic metadata naming the hosts for the override_host
// load-balancing policy, and the Set-Cookie header on the response. It makes
// no decision of its own.
//
// By file: server.go is the Server and what it is given (Decider,
// Observer); stream.go the stream loop and its exits; request.go the
// request phase (request headers → decision → answer); response.go the
// response phase (response headers → Decider.Respond → header changes);
// headers.go reads and writes headers and attributes for both; authz.go the
// same decision through ext_authz; options.go the gRPC server's limits;
// names.go the wire contract.
package extproc
