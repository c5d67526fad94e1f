package extproc

// The wire contract: every name the service and the Envoy configuration in
// envoy/ and examples/ must agree on. Tests use these constants too, and
// TestEnvoyYAMLNamesTheContract checks that each Envoy YAML names them.
const (
	// MetadataNamespace is the dynamic-metadata namespace the decision is
	// written to; the Envoy filter must list it in
	// metadata_options.receiving_namespaces or Envoy drops it.
	MetadataNamespace = "envoy.lb"
	// DestinationKey holds "primary,successor" as ip:port for the
	// override_host policy.
	DestinationKey = "x-gateway-destination-endpoint"
	// PrimaryKey holds the primary alone (ip:port), which the opaque route
	// compares with the host that served to mark a failover (PrimaryHeader).
	PrimaryKey = "x-affinity-primary"
	// ServedKey is where override_host's selected_host_key writes the host
	// that really served the request.
	ServedKey = "x-gateway-destination-endpoint-served"
	// KeyKey holds a keyed decision's stored key (affinity.Decision.Key),
	// so that a response marked as served elsewhere can re-bind it: the
	// affinity-failover filter is sent the namespace, not the request.
	KeyKey = "x-affinity-key"
	// MaxMetadataKey is the longest key written to KeyKey: Envoy copies
	// the metadata with every request, and a session keyed by a longer
	// value is not re-bound on failover (it moves back with its host).
	MaxMetadataKey = 1024
	// JWTFilterName is Envoy's jwt_authn filter, whose dynamic-metadata
	// namespace holds a verified token's payload (verified mode):
	// override_host reads affinity.HostClaim there.
	JWTFilterName = "envoy.filters.http.jwt_authn"
	// FilterName is Envoy's name of the ext_proc HTTP filter.
	FilterName = "envoy.filters.http.ext_proc"
	// AttributesKey is the key under which Envoy sends request attributes:
	// the filter's name.
	AttributesKey = FilterName
	// ClusterAttribute names the cluster the route chose; it selects the pool.
	ClusterAttribute = "xds.cluster_name"
	// PoolMetadataKey is the gRPC metadata key (grpc_service
	// initial_metadata in the Envoy filter) that names the pool, so the
	// policy can be chosen in Envoy's YAML; without it the cluster decides.
	PoolMetadataKey = "x-affinity-pool"
	// SourceAttribute is the downstream connection's address (the
	// client_address key source).
	SourceAttribute = "source.address"
	// CookieHeader is the request header sessions are read from.
	CookieHeader = "cookie"
	// SetCookieHeader is the response header sessions are written to.
	SetCookieHeader = "set-cookie"
	// StatusHeader is the response's status pseudo-header.
	StatusHeader = ":status"
	// PrimaryHeader carries a session's primary to Envoy and marks a
	// failover on the way back. In verified mode jwt_authn copies the
	// token's PrimaryClaim (base64 of ip:port) into this request header, and
	// Envoy's stateful_session filter, reading it, sets it on the response
	// only when another host served: the ext_proc then sends that response
	// to the service. In opaque mode the route sets it (a constant) when
	// upstream.address is not PrimaryKey. The service removes it from every
	// response it sees.
	PrimaryHeader = "x-affinity-primary"
	// CookieAttribute is the response attribute (a CEL expression) that
	// carries the request's Cookie header to the response message of a
	// failed-over established session, whose request the service never saw.
	CookieAttribute = "request.headers['cookie']"
)

// spoofableHeaders are request headers that name a host in some Envoy setups
// (override_host header sources). A client's copy is always removed, so no
// client can choose its host, whatever the Envoy configuration reads.
var spoofableHeaders = []string{DestinationKey, ServedKey}
