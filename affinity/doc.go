// Package affinity decides where a session goes.
//
// It holds the domain of session affinity and nothing of Envoy: the host set
// of a pool, the weighted consistent placement that gives every session a
// primary host and an agreed successor order, the signed session token that
// names the host a session is bound to, the cookie that carries it, and the
// configuration that describes all of it. The extproc package translates
// Envoy's messages into calls of Engine.Decide and Engine.Respond, and their
// Decision and Reply back into Envoy's messages.
//
// Where things are:
//   - config.go, config_parse.go, config_defaults.go, config_validate.go,
//     config_load.go: the YAML file (types, parsing, defaults, validation,
//     loading with its keys); build.go turns it into runtime pools.
//   - pool.go (Pool, Snapshot: the configuration in force), decision.go
//     (Request, Decision, outcomes and reasons), engine.go (the Engine and
//     its lifecycle).
//   - decide.go: what a request gets (Engine.Decide, the judgement of a
//     token or key); respond.go: what its response means (Engine.Respond);
//     bind.go: placement with bounded loads and the load signal, and
//     issuing the token; hostload.go: the load signal (Engine.SetLoad, the
//     view decisions read); explain.go: the same judgements, in words.
//   - hostsets.go: the host-set pipeline (listed hosts, operator's drains,
//     health view, host sets); drain.go and health.go feed it.
//   - rendezvous.go, host.go: placement; token.go, cookie.go, keys.go: the
//     session token; store.go: the session store.
//   - sources.go: key sources (KeySource, the keyKind interface, the
//     keyKinds table, and what Envoy needs of a pool's sources:
//     FallbackHash, NeedsClientAddress, TokenHeader, EnvoyMode); sourcekinds.go: one
//     type per kind of source. A new kind is one type there and one entry
//     in keyKinds. costs.go: what each source's requests cost in ext_proc
//     messages (Pool.Costs).
package affinity
