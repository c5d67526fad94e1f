package doctor

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

// extProcFilter checks one of the service's ext_proc filters.
func (x *examination) extProcFilter(p *affinity.Pool, s *site, f httpFilter) {
	where := s.where(f)
	cfg := f.cfg
	if !boolean(cfg["failure_mode_allow"]) {
		x.r.add(failureModeAllow.at(where, "failure_mode_allow is false (Envoy's default)"))
	}
	if d, ok := duration(cfg["message_timeout"]); ok && (d > time.Second || d < 20*time.Millisecond) {
		rule := messageTimeoutShort
		if d > time.Second {
			rule = messageTimeoutLong
		}
		x.r.add(rule.at(where, fmt.Sprintf("message_timeout is %s", d)))
	}
	grpc := get(cfg, "grpc_service", "envoy_grpc", "cluster_name")
	if cluster := str(grpc); cluster != "" {
		x.grpcCluster(where, cluster)
	} else if get(cfg, "grpc_service", "google_grpc") == nil {
		x.r.add(grpcServiceUnnamed.at(where, "grpc_service names no cluster"))
	}

	decides := false
	responds := false
	for _, rt := range s.routes {
		on := extProcOn(f, rt)
		decides = decides || on.enabled && on.request == "SEND"
		responds = responds || on.enabled && on.response == "SEND"
	}
	attrs := strs(cfg["request_attributes"])
	namesPool := slices.ContainsFunc(list(get(cfg, "grpc_service", "initial_metadata")), func(h any) bool {
		return str(get(h, "key")) == extproc.PoolMetadataKey
	})
	if decides {
		if (p.Mode == affinity.ModeOpaque || p.Mode == affinity.ModeVerified) && responds && !boolean(cfg["allow_mode_override"]) {
			x.r.add(allowModeOverride.at(where, "allow_mode_override is false"))
		}
		if usesMetadata(p) && !slices.Contains(strs(get(cfg, "metadata_options", "receiving_namespaces", "untyped")), extproc.MetadataNamespace) {
			x.r.add(receivingNamespaces.at(where, "metadata_options.receiving_namespaces does not list "+extproc.MetadataNamespace))
		}
		if !p.MatchAll && !namesPool && !slices.Contains(attrs, extproc.ClusterAttribute) {
			x.r.add(requestAttributesCluster.at(where, "request_attributes does not list "+extproc.ClusterAttribute, "${pool}", p.Name))
		}
		if slices.ContainsFunc(p.KeySources, func(k affinity.KeySourceSpec) bool {
			return k.Type == affinity.SourceClientAddress && k.TrustedHops == 0
		}) && !slices.Contains(attrs, extproc.SourceAttribute) {
			x.r.add(requestAttributesSource.at(where, "request_attributes does not list "+extproc.SourceAttribute+", which the client_address key source reads"))
		}
	}
	if responds && rebinds(p) && !slices.Contains(strs(get(cfg, "metadata_options", "forwarding_namespaces", "untyped")), extproc.MetadataNamespace) {
		x.r.add(forwardingNamespaces.at(where, "metadata_options.forwarding_namespaces does not list "+extproc.MetadataNamespace))
	}
}

// grpcCluster checks the cluster an ext_proc filter calls the service on.
func (x *examination) grpcCluster(where, name string) {
	cl, ok := x.e.Clusters[name]
	if !ok {
		x.r.add(grpcClusterMissing.at(where, fmt.Sprintf("grpc_service names cluster %q, which Envoy does not have", name),
			"${cluster}", strconv.Quote(name)))
		return
	}
	opts := get(cl, "typed_extension_protocol_options", "envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
	h2 := get(cl, "http2_protocol_options") != nil || get(opts, "explicit_http_config", "http2_protocol_options") != nil ||
		(get(opts, "auto_config") != nil && get(cl, "transport_socket") != nil)
	if !h2 {
		x.r.add(grpcHTTP1.at(fmt.Sprintf("cluster %q", name), "the ext_proc's cluster speaks HTTP/1.1 (no http2_protocol_options)"))
	}
	if !x.e.Live {
		return
	}
	members, known := x.e.Members[name]
	healthy := slices.ContainsFunc(members, func(m Member) bool { return m.Healthy })
	if known && !healthy {
		x.r.add(grpcUnhealthy.at(fmt.Sprintf("cluster %q", name), fmt.Sprintf("none of the cluster's %d hosts is healthy in Envoy's view", len(members))))
	}
}
