// Package affinity decides where a session goes.
//
// It holds the domain of session affinity and nothing of Envoy: the host set
// of a pool, the weighted consistent placement that gives every session a
// primary host and an agreed successor order, the signed session token that
// names the host a session is bound to, the cookie that carries it, and the
// configuration that describes all of it. The extproc package translates
// Envoy's messages into calls of Engine.Decide and the Decision back into
// Envoy's messages.
package affinity
