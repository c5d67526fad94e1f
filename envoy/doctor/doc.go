// Package doctor checks an Envoy's configuration against what the
// service's pools need: the ext_proc filter, jwt_authn, stateful_session,
// the routes, the override_host policy, retries and circuit breakers, and
// the live state (each pool's hosts against Envoy's cluster members, the
// signing key against the JWKS Envoy fetches). Each problem says what is
// wrong, where, what it breaks, and the exact fix.
//
// What can be wrong is a catalogue of rules, one for each way a check can
// fail, each with its check id, severity, what it compares, what it breaks
// and its fix; a problem is made from its rule, so that these cannot
// drift, and the README's table of checks is generated from it.
//
// The files, by what they hold:
//   - catalogue.go: the Rule type, the catalogue and its severities.
//   - rules.go: the rules, grouped by the step of the examination that
//     finds them.
//   - envoy.go: Envoy's configuration as read from a bootstrap file or a
//     running Envoy's admin API; tree.go: reading its generic tree.
//   - sites.go: the HTTP connection managers as the examination sees them,
//     with their filters and routes, and what a filter does on a route.
//   - examine.go: Check, and the examination of one Envoy, pool by pool.
//   - routes.go, extproc.go, jwt.go, failover.go, sessions.go, cluster.go,
//     hosts.go: its steps: the routes to a pool's cluster, the service's
//     ext_proc filters, jwt_authn and the key set, the way back of a
//     failed-over response, the stateful_session filters, the pool's
//     cluster (override_host, retries, circuit breakers) and its hosts.
//   - report.go: the problems found, as text or JSON.
package doctor
