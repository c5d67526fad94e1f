package doctor

import (
	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

// The catalogue. Each rule is found by one step of the examination; the
// comment above each group names it.

const (
	rebindBreaks = "a session that failed over (its host could not be reached, the successor served it) is not re-bound to " +
		"the host that served it: it goes back to its old host when that host returns, and loses its data a second time"
	fixGenerated  = "envoy-affinity envoy-config prints the exact piece"
	retryMeasured = "measured: a backend killed under load (90 sessions, a request each per 20 ms) gave 5,233 failed requests of 24,587 with Envoy's default, 0 with max_retries: 1024"
	fixExtProc    = "add the service's ext_proc filter before envoy.filters.http.router (" + fixGenerated + ")"
	fixRetryOn    = "retry_policy: {retry_on: connect-failure,refused-stream,reset, num_retries: 2, retry_host_predicate: [" + previousHostsPredicate + "], host_selection_retry_max_attempts: 10}"

	previousHostsPredicate = "{name: envoy.retry_host_predicates.previous_hosts, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}"
	jwksUnreachable        = "Envoy cannot fetch the service's keys and refuses every token: every request goes to the service"
	fixJWKSCluster         = "point the cluster at the service's admin listener (-admin-addr)"
	fixResponseAttributes  = "response_attributes: [xds.cluster_name, \"request.headers['cookie']\"]"
	opaqueCost             = "(the cost of opaque mode: 0.34× plain Envoy's throughput)"
)

// Whether the pool's requests reach the service at all (examination.pool,
// examination.site, examination.cluster).
var (
	extProcNowhere = &Rule{ID: "ext_proc.missing", Severity: Error,
		Compares: "a pool without a name: an ext_proc filter in some HTTP connection manager",
		Breaks:   "the service sees no request: no session is placed or kept",
		Fix:      fixExtProc}
	extProcMissing = &Rule{ID: "ext_proc.missing", Severity: Error,
		Compares: "an ext_proc filter in each HTTP connection manager whose routes go to the pool's cluster",
		Breaks:   "the service sees none of these requests: no session is placed or kept",
		Fix:      fixExtProc}
	routeNowhere = &Rule{ID: "route.missing", Severity: Error,
		Compares: "a pool without a name: a route to some cluster through an HTTP connection manager with an ext_proc filter",
		Breaks:   "the service sees no request: no session is placed or kept",
		Fix:      "add the service's filters and routes (envoy-affinity envoy-config prints them)"}
	routeMissing = &Rule{ID: "route.missing", Severity: Error,
		Compares: "a route of some listener to the pool's cluster",
		Breaks:   "the service sees no request of pool ${pool}",
		Fix:      "route the application's requests to the cluster through the listener that runs the service's ext_proc filter"}
	poolClusterMissing = &Rule{ID: "cluster.missing", Severity: Error,
		Compares: "a named pool: a cluster of its name",
		Breaks:   "no request reaches this pool: its sessions are not kept",
		Fix:      "name the pool after the Envoy cluster its requests go to, or add cluster ${cluster}"}
	routedClusterMissing = &Rule{ID: "cluster.missing", Severity: Error,
		Compares: "a pool without a name: each cluster its routes name",
		Breaks:   "requests to it fail",
		Fix:      "add the cluster"}
	discoveryCluster = &Rule{ID: "discovery.cluster", Severity: Error,
		Compares: "the cluster `discovery.envoy` names",
		Breaks:   "the pool gets no hosts: every request is left to Envoy's load balancer",
		Fix:      "set discovery.envoy.cluster to the cluster the pool's requests go to"}
)

// One of the service's ext_proc filters (examination.extProcFilter,
// examination.grpcCluster).
var (
	failureModeAllow = &Rule{ID: "ext_proc.failure_mode_allow", Severity: Error,
		Compares: "the ext_proc fails open",
		Breaks:   "while the service is unreachable or slow, every request through the filter fails with a 500; with it, Envoy fails open and the override_host fallback keeps sessions on their hosts",
		Fix:      "failure_mode_allow: true"}
	messageTimeoutLong = &Rule{ID: "ext_proc.message_timeout", Severity: Warning,
		Compares: "`message_timeout` at most 1 s",
		Breaks:   "a slow service holds each request that long before Envoy fails open",
		Fix:      "message_timeout: 0.2s"}
	messageTimeoutShort = &Rule{ID: "ext_proc.message_timeout", Severity: Warning,
		Compares: "`message_timeout` at least 20 ms",
		Breaks:   "ordinary service latency under load exceeds it: Envoy fails open and sessions are left to the fallback policy",
		Fix:      "message_timeout: 0.2s"}
	grpcServiceUnnamed = &Rule{ID: "ext_proc.grpc_service", Severity: Error,
		Compares: "`grpc_service` names a cluster (or a `google_grpc` target)",
		Breaks:   "Envoy cannot reach the service",
		Fix:      "grpc_service: {envoy_grpc: {cluster_name: envoy_affinity}} with that cluster reaching the service's -grpc-addr over HTTP/2"}
	grpcClusterMissing = &Rule{ID: "ext_proc.grpc_service", Severity: Error,
		Compares: "the gRPC cluster exists",
		Breaks:   "Envoy cannot reach the service: every request fails open, no session is kept",
		Fix:      "add cluster ${cluster} reaching the service's -grpc-addr over HTTP/2 (" + fixGenerated + ")"}
	grpcHTTP1 = &Rule{ID: "ext_proc.grpc_service", Severity: Error,
		Compares: "the gRPC cluster speaks HTTP/2",
		Breaks:   "gRPC needs HTTP/2: every call fails, Envoy fails open, no session is kept",
		Fix:      "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {max_concurrent_streams: 10000}}}}"}
	grpcUnhealthy = &Rule{ID: "ext_proc.grpc_service", Severity: Error,
		Compares: "live: the gRPC cluster has a healthy host",
		Breaks:   "Envoy cannot reach the service: every request fails open, no session is placed",
		Fix:      "point the cluster at the service's -grpc-addr and check that the service runs"}
	allowModeOverride = &Rule{ID: "ext_proc.allow_mode_override", Severity: Warning,
		Compares: "verified and opaque: one message per established session (`allow_mode_override`)",
		Breaks:   "the service cannot skip the response of a request that needs no cookie: two messages instead of one (measured: 0.28× instead of 0.34× plain Envoy's throughput in opaque mode)",
		Fix:      "allow_mode_override: true"}
	receivingNamespaces = &Rule{ID: "ext_proc.receiving_namespaces", Severity: Error,
		Compares: "`envoy.lb` in `metadata_options.receiving_namespaces` (a pool whose decision is metadata)",
		Breaks:   "Envoy silently drops the service's decision: requests go to the fallback policy, sessions are not kept where the service placed them",
		Fix:      "metadata_options: {receiving_namespaces: {untyped: [envoy.lb]}, forwarding_namespaces: {untyped: [envoy.lb]}}"}
	requestAttributesCluster = &Rule{ID: "ext_proc.request_attributes", Severity: Error,
		Compares: "named pools: `xds.cluster_name` in `request_attributes` (unless `grpc_service.initial_metadata` names the pool)",
		Breaks:   "the service cannot tell which pool a request is for: pool ${pool} decides nothing",
		Fix:      "request_attributes: [xds.cluster_name, source.address]"}
	requestAttributesSource = &Rule{ID: "ext_proc.request_attributes", Severity: Error,
		Compares: "`source.address` in `request_attributes` for a `client_address` key source",
		Breaks:   "requests keyed by client address get no key: each is placed as a new session",
		Fix:      "request_attributes: [xds.cluster_name, source.address]"}
	forwardingNamespaces = &Rule{ID: "ext_proc.forwarding_namespaces", Severity: Error,
		Compares: "pools that re-bind failed-over sessions: `envoy.lb` in `metadata_options.forwarding_namespaces`",
		Breaks:   "the service never learns which host served (override_host's selected_host_key): " + rebindBreaks,
		Fix:      "metadata_options: {forwarding_namespaces: {untyped: [envoy.lb]}}"}
)

// The routes to the pool's cluster (examination.site).
var (
	routeOrder = &Rule{ID: "route.order", Severity: Error,
		Compares: "verified and native: the established route ahead of a route taking the same requests",
		Breaks:   "it never matches: every request goes to the service " + opaqueCost,
		Fix:      "put the established route first, the deciding route after it"}
	establishedAsks = &Rule{ID: "route.established", Severity: Warning,
		Compares: "verified: the ext_proc sends no request headers on the established route",
		Breaks:   "every established request costs a message to the service, which Envoy could have routed alone",
		Fix:      "processing_mode request_header_mode: SKIP on the filter, SEND in an ExtProcPerRoute override on the deciding route (" + fixGenerated + ")"}
	establishedAsksNative = &Rule{ID: "route.established", Severity: Warning,
		Compares: "native: the ext_proc is off on the established route",
		Breaks:   "every established request costs a message to the service, which Envoy could have routed alone",
		Fix:      "typed_per_filter_config on the route: {envoy.filters.http.ext_proc: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute, disabled: true}}"}
	establishedMissing = &Rule{ID: "route.established", Severity: Error,
		Compares: "verified: a route matching a verified token ahead of the deciding one",
		Breaks:   "verified mode is not in effect: every request goes to the service " + opaqueCost,
		Fix:      "add the established route before the deciding one (" + fixGenerated + ")"}
	establishedPath = &Rule{ID: "route.established", Severity: Error,
		Compares: "verified: the established route matches the provider's `payload_in_metadata` key and claim `h`",
		Breaks:   "it never matches: every request goes to the service",
		Fix:      "match: {dynamic_metadata: [{filter: " + extproc.JWTFilterName + ", path: [{key: ${payload}}, {key: " + affinity.HostClaim + "}], value: {present_match: true}}]}"}
	requestHeadersSkipped = &Rule{ID: "ext_proc.processing_mode", Severity: Error,
		Compares: "request headers sent on every deciding route",
		Breaks:   "requests on this route get no decision: new sessions are placed by Envoy's fallback policy and never get a session cookie",
		Fix:      "processing_mode: {request_header_mode: SEND} on the route (ExtProcPerRoute overrides) or the filter"}
	responseHeadersSkipped = &Rule{ID: "ext_proc.processing_mode", Severity: Error,
		Compares: "verified and opaque: response headers sent on every deciding route, where the cookie is written",
		Breaks:   "the session cookie is written on the response: new sessions never get one, and each request is placed anew",
		Fix:      "processing_mode: {response_header_mode: SEND}"}
	bodiesSent = &Rule{ID: "ext_proc.processing_mode", Severity: Warning,
		Compares: "no bodies sent on a deciding route",
		Breaks:   "Envoy streams or buffers every body to the service, which needs headers only: more messages per request",
		Fix:      "processing_mode: {request_body_mode: NONE, response_body_mode: NONE}"}
)

// The pool's cluster (examination.overrideHost, examination.retry,
// examination.circuitBreakers).
var (
	overrideHostPolicy = &Rule{ID: "override_host.policy", Severity: Error,
		Compares: "the pool's cluster uses the override_host load-balancing policy",
		Breaks:   "Envoy ignores the service's decision and each verified token: requests go where the cluster's load balancer sends them, sessions are not kept",
		Fix:      "load_balancing_policy: {policies: [{typed_extension_config: {name: envoy.load_balancing_policies.override_host, ...}}]} with your current policy as its fallback_policy (" + fixGenerated + ")"}
	decisionSource = &Rule{ID: "override_host.sources", Severity: Error,
		Compares: "override_host reads the service's decision (`envoy.lb` metadata, or the pool's `output.header`)",
		Breaks:   "Envoy ignores the service's decision: new and re-bound sessions go where the fallback policy sends them",
		Fix:      "override_host_sources: [${source}]"}
	tokenSource = &Rule{ID: "override_host.sources", Severity: Error,
		Compares: "verified: override_host reads the token's claim `h`",
		Breaks:   "established sessions, which Envoy routes without the service, go where the fallback policy sends them: sessions are not kept",
		Fix: "override_host_sources: [{metadata: {key: " + extproc.JWTFilterName + ", path: [{key: ${payload}}, {key: " + affinity.HostClaim + "}]}}, " +
			"{metadata: {key: envoy.lb, path: [{key: x-gateway-destination-endpoint}]}}]"}
	sourceOrder = &Rule{ID: "override_host.sources", Severity: Warning,
		Compares: "verified: the token's claim read before the service's decision, the tested order",
		Breaks:   "differs from the tested order (the token first, then the decision)",
		Fix:      "list the jwt_authn source first"}
	selectedHostKey = &Rule{ID: "override_host.selected_host_key", Severity: Error,
		Compares: "pools that re-bind failed-over sessions: `selected_host_key` records the host that served",
		Breaks:   "the service never learns which host served: " + rebindBreaks,
		Fix:      "selected_host_key: {key: " + extproc.MetadataNamespace + ", path: [{key: " + extproc.ServedKey + "}]}"}
	fallbackHash = &Rule{ID: "override_host.fallback_policy", Severity: Warning,
		Compares: "the fallback hashes what the pool keys by: the session cookie, else its first key source (header, query parameter, client address, application cookie); the policy's own `hash_policy` or the route's",
		Breaks:   "while the service is unreachable, requests without a verified token scatter over the hosts instead of each session keeping one",
		Fix:      "fallback_policy: {policies: [{typed_extension_config: {name: envoy.load_balancing_policies.maglev, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev, consistent_hashing_lb_config: {hash_policy: [${hash}]}}}}]}"}
	maxRetries = &Rule{ID: "cluster.max_retries", Severity: Error,
		Compares: "circuit_breakers `max_retries` ≥ 100 or a `retry_budget`",
		Breaks:   "when a host dies, its sessions' requests are retried on their successors at once and those past the limit fail with 503 (" + retryMeasured + ")",
		Fix:      "circuit_breakers: {thresholds: [{max_retries: 1024}]}"}
	retryOn = &Rule{ID: "route.retry_policy", Severity: Error,
		Compares: "the route retries on `connect-failure`",
		Breaks:   "requests of a host that just died fail with 503 until the service moves its sessions",
		Fix:      fixRetryOn}
	retryCount = &Rule{ID: "route.retry_policy", Severity: Error,
		Compares: "`num_retries` at least 1",
		Breaks:   "requests of a host that just died fail with 503",
		Fix:      "num_retries: 2"}
	retryPreviousHosts = &Rule{ID: "route.retry_policy", Severity: Error,
		Compares: "a `previous_hosts` retry host predicate",
		Breaks:   "override_host sends the retry back to the host that just failed instead of the successor: the request fails",
		Fix:      "retry_host_predicate: [" + previousHostsPredicate + "]"}
	retryAttempts = &Rule{ID: "route.retry_policy", Severity: Warning,
		Compares: "`host_selection_retry_max_attempts` ≥ 3",
		Breaks:   "a retry's host selection gives up early and may land on the host that failed",
		Fix:      "host_selection_retry_max_attempts: 10"}
	retryAttemptsNative = &Rule{ID: "route.retry_policy", Severity: Warning,
		Compares: "native: `host_selection_retry_max_attempts` ≥ 10, since its retries are the fallback hash's picks",
		Breaks:   "native mode retries by the fallback's hash, which gives each session a fixed order of picks: with 3 hosts and 5 attempts, 1 session in 243 draws the failed host every time and its request fails",
		Fix:      "host_selection_retry_max_attempts: 10"}
)

// The pool's hosts against the cluster's members (examination.hosts).
var (
	hostMissing = &Rule{ID: "hosts.missing", Severity: Error,
		Compares: "each of the pool's hosts is a member of the cluster (live, or the file's `load_assignment` / EDS file)",
		Breaks:   "sessions the service places there cannot be routed there: each of their requests goes to the successor or the fallback policy",
		Fix:      "make the pool's hosts Envoy's members (or read them from Envoy: discovery.envoy)"}
	hostName = &Rule{ID: "hosts.name", Severity: Warning,
		Compares: "a host has the same name in the pool and in Envoy",
		Breaks:   "logs, metrics and the successor header name the host differently from Envoy's",
		Fix:      "name: ${hostname}"}
	hostExtra = &Rule{ID: "hosts.extra", Severity: Warning,
		Compares: "each of the cluster's members is one of the pool's hosts",
		Breaks:   "the service never places a session there; only Envoy's fallback policy sends it requests",
		Fix:      "add it to the pool's hosts, or read the hosts from Envoy (discovery.envoy)"}
)

// jwt_authn in verified mode (examination.jwt, examination.jwtRules,
// examination.jwks, examination.envelopeRoute).
var (
	jwtProvider = &Rule{ID: "jwt_authn.provider", Severity: Error,
		Compares: "verified: a provider reading the pool's cookie (or, in a pool without one, the session header that carries an envelope)",
		Breaks:   "Envoy does not verify the session token: verified mode is not in effect, every request goes to the service " + opaqueCost,
		Fix:      "add the jwt_authn filter before the ext_proc (" + fixGenerated + ")"}
	extProcBeforeJWT = &Rule{ID: "filter.order", Severity: Error,
		Compares: "verified: jwt_authn before the ext_proc",
		Breaks:   "the route is chosen before the token is verified: every request goes to the service",
		Fix:      "put jwt_authn first, then the ext_proc, then the router"}
	payloadInMetadata = &Rule{ID: "jwt_authn.payload_in_metadata", Severity: Error,
		Compares: "verified: the claims in metadata, for the established route and override_host",
		Breaks:   "the verified claims reach neither the route nor override_host: every request goes to the service",
		Fix:      "payload_in_metadata: affinity (and the same key in the route's dynamic_metadata match and override_host's source)"}
	clearRouteCache = &Rule{ID: "jwt_authn.clear_route_cache", Severity: Error,
		Compares: "verified: the route re-chosen once the claims are in metadata",
		Breaks:   "the route is chosen before the claims are in metadata: the established route never matches, every request goes to the service",
		Fix:      "clear_route_cache: true"}
	jwtCacheConfig = &Rule{ID: "jwt_authn.jwt_cache_config", Severity: Warning,
		Compares: "verified: a token cache",
		Breaks:   "Envoy verifies each request's token signature again instead of once per worker",
		Fix:      "jwt_cache_config: {jwt_cache_size: 10000} (above the active sessions per Envoy worker)"}
	clockSkew = &Rule{ID: "jwt_authn.clock_skew_seconds", Severity: Warning,
		Compares: "verified: `clock_skew_seconds` at most a tenth of `refresh_interval`",
		Breaks:   "Envoy accepts a token ${skew} s past its expiry: a session whose host left the service's pool (but not Envoy's cluster) stays there that much longer than the refresh interval (measured with the 60 s default: a minute)",
		Fix:      "clock_skew_seconds: 5"}
	audiencesOther = &Rule{ID: "jwt_authn.audiences", Severity: Error,
		Compares: "verified: `audiences`, when set, hold the pool's name",
		Breaks:   "Envoy refuses every token of the pool: every request goes to the service",
		Fix:      "audiences: [${pool}]"}
	audiencesUnset = &Rule{ID: "jwt_authn.audiences", Severity: Warning,
		Compares: "verified, with several pools: `audiences` set",
		Breaks:   "a token issued for another pool is accepted on this route: a client can carry a session across pools",
		Fix:      "audiences: [${pool}]"}
	maxLifetime = &Rule{ID: "jwt_authn.max_lifetime", Severity: Error,
		Compares: "verified: `max_lifetime` at least a token's lifetime (`refresh_interval`, an envelope's `absolute_timeout`)",
		Breaks:   "Envoy refuses the pool's tokens: every request goes to the service " + opaqueCost,
		Fix:      "max_lifetime: ${lifetime}s"}
	jwtRequired = &Rule{ID: "jwt_authn.rules", Severity: Error,
		Compares: "verified: a missing or failed token allowed",
		Breaks:   "a request without a valid token (every new or expired session) gets 401: no session starts",
		Fix:      "requires: {requires_any: {requirements: [{provider_name: ${provider}}, {allow_missing_or_failed: {}}]}}"}
	jwksCluster = &Rule{ID: "jwt_authn.jwks", Severity: Error,
		Compares: "verified: `remote_jwks` names a cluster Envoy has",
		Breaks:   jwksUnreachable,
		Fix:      "add a cluster reaching the service's admin listener (-admin-addr) and name it in remote_jwks.http_uri.cluster"}
	jwksPath = &Rule{ID: "jwt_authn.jwks", Severity: Error,
		Compares: "verified: `remote_jwks` fetches the service's `/.well-known/jwks.json`",
		Breaks:   "Envoy fetches no keys and refuses every token: every request goes to the service",
		Fix:      "remote_jwks: {http_uri: {uri: http://<service admin address>/.well-known/jwks.json, cluster: ${cluster}, timeout: 1s}}"}
	jwksFetch = &Rule{ID: "jwt_authn.jwks", Severity: Error,
		Compares: "verified, live: the JWKS cluster's first healthy host serves the key set",
		Breaks:   jwksUnreachable,
		Fix:      fixJWKSCluster}
	jwksKey = &Rule{ID: "jwt_authn.jwks", Severity: Error,
		Compares: "verified: the key set Envoy reads (inline, or live from the JWKS cluster) holds the key that signs",
		Breaks:   "Envoy refuses every token the service signs: every request goes to the service",
		Fix:      "point remote_jwks at this service's admin listener (the same keys file on every replica)"}
	envelopeRestore = &Rule{ID: "envelope.restore", Severity: Error,
		Compares: "verified, a session header in an envelope: the established route writes the upstream's own value (`%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:affinity:sid)%`) over the header",
		Breaks:   "the upstream receives the envelope instead of the session id it issued: every established request is refused (MCP: 404, the client starts over)",
		Fix:      "request_headers_to_add: [{header: {key: ${header}, value: ${value}}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]"}
	envelopeResponse = &Rule{ID: "envelope.response", Severity: Warning,
		Compares: "verified, a session header in an envelope: the established route removes the header from responses",
		Breaks:   "an upstream that repeats its session id hands the client the bare value in place of its envelope: the client's next request is a new session",
		Fix:      "response_headers_to_remove: [${header}]"}
)

// A failed-over response reaches the service (examination.failoverVerified,
// examination.failoverOpaque).
var (
	failoverNoResponse = &Rule{ID: "failover.response", Severity: Error,
		Compares: "verified: an ext_proc sends the established route's response headers",
		Breaks:   rebindBreaks,
		Fix:      "processing_mode: {request_header_mode: SKIP, response_header_mode: SEND} on the filter (" + fixGenerated + ")"}
	failoverCookie = &Rule{ID: "failover.response", Severity: Error,
		Compares: "verified: the responding ext_proc's `response_attributes` carry the request's cookie",
		Breaks:   "the service never saw this request: without its cookie it cannot re-bind the session. " + rebindBreaks,
		Fix:      fixResponseAttributes}
	failoverUnwrapped = &Rule{ID: "failover.mark", Severity: Warning,
		Compares: "verified: the responding ext_proc wrapped in an `ExtensionWithMatcher` that skips unmarked responses",
		Breaks:   "every established response costs a message to the service",
		Fix:      fixGenerated}
	markerBeforeExtProc = &Rule{ID: "filter.order", Severity: Error,
		Compares: "verified: the header-based stateful_session filter that marks failovers after the ext_proc",
		Breaks:   "responses pass filters in reverse order: the ext_proc's matcher reads the response before it is marked. " + rebindBreaks,
		Fix:      "put the stateful_session filter after the ext_proc, just before the router"}
	failoverUnmarked = &Rule{ID: "failover.mark", Severity: Error,
		Compares: "verified: `claim_to_headers` `p` and the header-based stateful_session filter mark a response another host served",
		Breaks:   "the ext_proc's matcher skips every established response. " + rebindBreaks,
		Fix:      fixGenerated}
	earlyHeaderRemoval = &Rule{ID: "hcm.early_header_removal", Severity: Error,
		Compares: "verified: the client's own `x-affinity-primary` removed before the filters run",
		Breaks:   "the stateful_session filter reads the first copy: a client can name the host its request goes to",
		Fix:      "early_header_mutation_extensions: [{name: envoy.http.early_header_mutation.header_mutation, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation, mutations: [{remove: x-affinity-primary}]}}]"}
	failoverUnmarkedOpaque = &Rule{ID: "failover.mark", Severity: Error,
		Compares: "opaque: the route's `response_headers_to_add` marks a failed-over response, and a response-only ext_proc sends it",
		Breaks:   rebindBreaks,
		Fix:      fixGenerated}
	failoverCookieOpaque = &Rule{ID: "failover.response", Severity: Error,
		Compares: "opaque, a pool with the cookie source: the response-only ext_proc's `response_attributes` carry the request's cookie",
		Breaks:   "the service cannot read the session of a marked response. " + rebindBreaks,
		Fix:      fixResponseAttributes}
)

// The stateful_session filters (examination.native,
// examination.statefulSessionHeader).
var (
	sessionCookie = &Rule{ID: "stateful_session.cookie", Severity: Error,
		Compares: "native: the cookie filter's cookie is the pool's",
		Breaks:   "the established route and the fallback hash read one cookie, Envoy writes another: sessions are not kept",
		Fix:      "cookie: {name: ${cookie}, path: /}"}
	sessionCookieMissing = &Rule{ID: "stateful_session.missing", Severity: Error,
		Compares: "native: a stateful_session filter with a cookie session state",
		Breaks:   "Envoy keeps no session: each request without a decision goes where the load balancer sends it",
		Fix:      "add envoy.filters.http.stateful_session with envoy.http.stateful_session.cookie {cookie: {name: ${cookie}, path: /}} before the ext_proc (" + fixGenerated + ")"}
	extProcBeforeSession = &Rule{ID: "filter.order", Severity: Warning,
		Compares: "native: the stateful_session filter before the ext_proc",
		Breaks:   "differs from the tested order (stateful_session, ext_proc, router)",
		Fix:      "put stateful_session first"}
	extProcAfterHeaderSession = &Rule{ID: "filter.order", Severity: Error,
		Compares: "`output.stateful_session_header` (Istio): the ext_proc before the stateful_session filter reading the header",
		Breaks:   "the session filter reads the header before the service writes it: the service's decision is ignored",
		Fix:      "insert the ext_proc before envoy.filters.http.stateful_session"}
	headerSessionMissing = &Rule{ID: "stateful_session.missing", Severity: Error,
		Compares: "`output.stateful_session_header` (Istio): a stateful_session filter with a header session state reading the header",
		Breaks:   "nothing reads the header the service writes: its decisions are ignored",
		Fix:      "Istio: label the Service istio.io/persistent-session-header: ${header}"}
)

// rules is the catalogue in the README's order.
var rules = []*Rule{
	extProcNowhere, extProcMissing, routeNowhere, routeMissing, poolClusterMissing, routedClusterMissing,
	failureModeAllow, allowModeOverride, messageTimeoutLong, messageTimeoutShort,
	requestHeadersSkipped, responseHeadersSkipped, bodiesSent,
	requestAttributesCluster, requestAttributesSource, receivingNamespaces, forwardingNamespaces,
	grpcServiceUnnamed, grpcClusterMissing, grpcHTTP1, grpcUnhealthy,
	overrideHostPolicy, decisionSource, tokenSource, sourceOrder, selectedHostKey, fallbackHash,
	retryOn, retryCount, retryPreviousHosts, retryAttempts, retryAttemptsNative, maxRetries,
	jwtProvider, payloadInMetadata, clearRouteCache, jwtCacheConfig, clockSkew, audiencesOther, audiencesUnset,
	maxLifetime, jwtRequired, jwksCluster, jwksPath, jwksFetch, jwksKey,
	envelopeRestore, envelopeResponse,
	establishedAsks, establishedAsksNative, establishedMissing, establishedPath, routeOrder,
	failoverNoResponse, failoverCookie, failoverCookieOpaque, failoverUnwrapped, failoverUnmarked, failoverUnmarkedOpaque, earlyHeaderRemoval,
	sessionCookieMissing, sessionCookie, headerSessionMissing, extProcBeforeJWT, markerBeforeExtProc, extProcBeforeSession, extProcAfterHeaderSession,
	hostMissing, hostExtra, hostName, discoveryCluster,
}
