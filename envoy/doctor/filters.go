package doctor

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

// extProcFilter checks one of the service's ext_proc filters.
func (c *checker) extProcFilter(p *affinity.Pool, s *site, f httpFilter) {
	where := s.where(f)
	cfg := f.cfg
	if !boolean(cfg["failure_mode_allow"]) {
		c.r.add(Problem{Severity: Error, Check: "ext_proc.failure_mode_allow", Where: where,
			Problem: "failure_mode_allow is false (Envoy's default)",
			Breaks:  "while the service is unreachable or slow, every request through the filter fails with a 500; with it, Envoy fails open and the override_host fallback keeps sessions on their hosts",
			Fix:     "failure_mode_allow: true"})
	}
	if d, ok := duration(cfg["message_timeout"]); ok && (d > time.Second || d < 20*time.Millisecond) {
		c.r.add(Problem{Severity: Warning, Check: "ext_proc.message_timeout", Where: where,
			Problem: fmt.Sprintf("message_timeout is %s", d),
			Breaks: map[bool]string{true: "a slow service holds each request that long before Envoy fails open",
				false: "ordinary service latency under load exceeds it: Envoy fails open and sessions are left to the fallback policy"}[d > time.Second],
			Fix: "message_timeout: 0.2s"})
	}
	grpc := get(cfg, "grpc_service", "envoy_grpc", "cluster_name")
	if cluster := str(grpc); cluster != "" {
		c.grpcCluster(where, cluster)
	} else if get(cfg, "grpc_service", "google_grpc") == nil {
		c.r.add(Problem{Severity: Error, Check: "ext_proc.grpc_service", Where: where,
			Problem: "grpc_service names no cluster",
			Breaks:  "Envoy cannot reach the service",
			Fix:     "grpc_service: {envoy_grpc: {cluster_name: envoy_affinity}} with that cluster reaching the service's -grpc-addr over HTTP/2"})
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
			c.r.add(Problem{Severity: Warning, Check: "ext_proc.allow_mode_override", Where: where,
				Problem: "allow_mode_override is false",
				Breaks:  "the service cannot skip the response of a request that needs no cookie: two messages instead of one (measured: 0.28× instead of 0.34× plain Envoy's throughput in opaque mode)",
				Fix:     "allow_mode_override: true"})
		}
		if usesMetadata(p) && !slices.Contains(strs(get(cfg, "metadata_options", "receiving_namespaces", "untyped")), extproc.MetadataNamespace) {
			c.r.add(Problem{Severity: Error, Check: "ext_proc.receiving_namespaces", Where: where,
				Problem: "metadata_options.receiving_namespaces does not list " + extproc.MetadataNamespace,
				Breaks:  "Envoy silently drops the service's decision: requests go to the fallback policy, sessions are not kept where the service placed them",
				Fix:     "metadata_options: {receiving_namespaces: {untyped: [envoy.lb]}, forwarding_namespaces: {untyped: [envoy.lb]}}"})
		}
		if !p.MatchAll && !namesPool && !slices.Contains(attrs, extproc.ClusterAttribute) {
			c.r.add(Problem{Severity: Error, Check: "ext_proc.request_attributes", Where: where,
				Problem: "request_attributes does not list " + extproc.ClusterAttribute,
				Breaks:  "the service cannot tell which pool a request is for: pool " + p.Name + " decides nothing",
				Fix:     "request_attributes: [xds.cluster_name, source.address]"})
		}
		if slices.ContainsFunc(p.KeySources, func(k affinity.KeySourceSpec) bool {
			return k.Type == affinity.SourceClientAddress && k.TrustedHops == 0
		}) && !slices.Contains(attrs, extproc.SourceAttribute) {
			c.r.add(Problem{Severity: Error, Check: "ext_proc.request_attributes", Where: where,
				Problem: "request_attributes does not list " + extproc.SourceAttribute + ", which the client_address key source reads",
				Breaks:  "requests keyed by client address get no key: each is placed as a new session",
				Fix:     "request_attributes: [xds.cluster_name, source.address]"})
		}
	}
	if responds && rebinds(p) && !slices.Contains(strs(get(cfg, "metadata_options", "forwarding_namespaces", "untyped")), extproc.MetadataNamespace) {
		c.r.add(Problem{Severity: Error, Check: "ext_proc.forwarding_namespaces", Where: where,
			Problem: "metadata_options.forwarding_namespaces does not list " + extproc.MetadataNamespace,
			Breaks:  "the service never learns which host served (override_host's selected_host_key): " + rebindBreaks,
			Fix:     "metadata_options: {forwarding_namespaces: {untyped: [envoy.lb]}}"})
	}
}

// grpcCluster checks the cluster an ext_proc filter calls the service on.
func (c *checker) grpcCluster(where, name string) {
	cl, ok := c.e.Clusters[name]
	if !ok {
		c.r.add(Problem{Severity: Error, Check: "ext_proc.grpc_service", Where: where,
			Problem: fmt.Sprintf("grpc_service names cluster %q, which Envoy does not have", name),
			Breaks:  "Envoy cannot reach the service: every request fails open, no session is kept",
			Fix:     fmt.Sprintf("add cluster %q reaching the service's -grpc-addr over HTTP/2 (%s)", name, fixGenerated)})
		return
	}
	opts := get(cl, "typed_extension_protocol_options", "envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
	h2 := get(cl, "http2_protocol_options") != nil || get(opts, "explicit_http_config", "http2_protocol_options") != nil ||
		(get(opts, "auto_config") != nil && get(cl, "transport_socket") != nil)
	if !h2 {
		c.r.add(Problem{Severity: Error, Check: "ext_proc.grpc_service", Where: fmt.Sprintf("cluster %q", name),
			Problem: "the ext_proc's cluster speaks HTTP/1.1 (no http2_protocol_options)",
			Breaks:  "gRPC needs HTTP/2: every call fails, Envoy fails open, no session is kept",
			Fix:     "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {max_concurrent_streams: 10000}}}}"})
	}
	if !c.e.Live {
		return
	}
	members, known := c.e.Members[name]
	healthy := slices.ContainsFunc(members, func(m Member) bool { return m.Healthy })
	if known && !healthy {
		c.r.add(Problem{Severity: Error, Check: "ext_proc.grpc_service", Where: fmt.Sprintf("cluster %q", name),
			Problem: fmt.Sprintf("none of the cluster's %d hosts is healthy in Envoy's view", len(members)),
			Breaks:  "Envoy cannot reach the service: every request fails open, no session is placed",
			Fix:     "point the cluster at the service's -grpc-addr and check that the service runs"})
	}
}

// tokenCarrier is where a verified pool's clients present the token Envoy
// verifies: the session cookie, or, in a pool without one, the upstream
// session header that carries an envelope.
func tokenCarrier(p *affinity.Pool) (header bool, name string) {
	if _, ok := sourceOf(p, affinity.SourceCookie); !ok {
		if ks, ok := sourceOf(p, affinity.SourceUpstreamHeader); ok && ks.Envelope {
			return true, ks.Name
		}
	}
	return false, p.Cookie.Name
}

// readsToken tells whether a jwt_authn provider reads the pool's token.
func readsToken(pv any, header bool, name string) bool {
	if !header {
		return slices.Contains(strs(get(pv, "from_cookies")), name)
	}
	return slices.ContainsFunc(list(get(pv, "from_headers")), func(h any) bool {
		return strings.EqualFold(str(get(h, "name")), name) && str(get(h, "value_prefix")) == ""
	})
}

// jwt checks jwt_authn for a verified pool and returns the provider that
// reads the pool's token (tokenCarrier).
func (c *checker) jwt(p *affinity.Pool, s *site, ours []httpFilter) (string, map[string]any) {
	filters := s.byType(typeJwtAuthn)
	var f httpFilter
	var name string
	var prov map[string]any
	inHeader, carrier := tokenCarrier(p)
	for _, jf := range filters {
		for n, pv := range obj(jf.cfg["providers"]) {
			if readsToken(pv, inHeader, carrier) && (prov == nil || n < name) {
				f, name, prov = jf, n, obj(pv)
			}
		}
	}
	if prov == nil {
		problem := "no jwt_authn filter"
		switch {
		case len(filters) > 0 && inHeader:
			problem = fmt.Sprintf("no jwt_authn provider reads header %q (from_headers, no value_prefix)", carrier)
		case len(filters) > 0:
			problem = fmt.Sprintf("no jwt_authn provider reads cookie %q (from_cookies)", p.Cookie.Name)
		}
		c.r.add(Problem{Severity: Error, Check: "jwt_authn.provider", Where: fmt.Sprintf("listener %q", s.listener),
			Problem: problem + " for verified pool " + p.Name,
			Breaks:  "Envoy does not verify the session token: verified mode is not in effect, every request goes to the service (the cost of opaque mode: 0.34× plain Envoy's throughput)",
			Fix:     "add the jwt_authn filter before the ext_proc (" + fixGenerated + ")"})
		return "", nil
	}
	where := fmt.Sprintf("listener %q, http filter %q, provider %q", s.listener, f.name, name)
	for _, o := range ours {
		if o.index < f.index {
			c.r.add(Problem{Severity: Error, Check: "filter.order", Where: s.where(o),
				Problem: fmt.Sprintf("the ext_proc filter comes before jwt_authn %q", f.name),
				Breaks:  "the route is chosen before the token is verified: every request goes to the service",
				Fix:     "put jwt_authn first, then the ext_proc, then the router"})
		}
	}
	payload := str(prov["payload_in_metadata"])
	if payload == "" {
		c.r.add(Problem{Severity: Error, Check: "jwt_authn.payload_in_metadata", Where: where,
			Problem: "payload_in_metadata is not set",
			Breaks:  "the verified claims reach neither the route nor override_host: every request goes to the service",
			Fix:     "payload_in_metadata: affinity (and the same key in the route's dynamic_metadata match and override_host's source)"})
	}
	if !boolean(prov["clear_route_cache"]) {
		c.r.add(Problem{Severity: Error, Check: "jwt_authn.clear_route_cache", Where: where,
			Problem: "clear_route_cache is false",
			Breaks:  "the route is chosen before the claims are in metadata: the established route never matches, every request goes to the service",
			Fix:     "clear_route_cache: true"})
	}
	if prov["jwt_cache_config"] == nil {
		c.r.add(Problem{Severity: Warning, Check: "jwt_authn.jwt_cache_config", Where: where,
			Problem: "jwt_cache_config is not set",
			Breaks:  "Envoy verifies each request's token signature again instead of once per worker",
			Fix:     "jwt_cache_config: {jwt_cache_size: 10000} (above the active sessions per Envoy worker)"})
	}
	skew := 60 * time.Second // Envoy's default
	if n, ok := number(prov["clock_skew_seconds"]); ok {
		skew = time.Duration(n) * time.Second
	}
	if skew > p.RefreshInterval/10 {
		c.r.add(Problem{Severity: Warning, Check: "jwt_authn.clock_skew_seconds", Where: where,
			Problem: fmt.Sprintf("clock_skew_seconds is %d s, more than a tenth of the pool's refresh interval (%s)", int(skew.Seconds()), p.RefreshInterval),
			Breaks:  fmt.Sprintf("Envoy accepts a token %d s past its expiry: a session whose host left the service's pool (but not Envoy's cluster) stays there that much longer than the refresh interval (measured with the 60 s default: a minute)", int(skew.Seconds())),
			Fix:     "clock_skew_seconds: 5"})
	}
	aud := strs(prov["audiences"])
	switch {
	case len(aud) > 0 && !slices.Contains(aud, p.Name):
		c.r.add(Problem{Severity: Error, Check: "jwt_authn.audiences", Where: where,
			Problem: fmt.Sprintf("audiences %v does not list the pool's name %q, which its tokens carry (claim aud)", aud, p.Name),
			Breaks:  "Envoy refuses every token of the pool: every request goes to the service",
			Fix:     fmt.Sprintf("audiences: [%s]", p.Name)})
	case len(aud) == 0 && len(c.svc.Pools) > 1:
		c.r.add(Problem{Severity: Warning, Check: "jwt_authn.audiences", Where: where,
			Problem: "audiences is not set",
			Breaks:  "a token issued for another pool is accepted on this route: a client can carry a session across pools",
			Fix:     fmt.Sprintf("audiences: [%s]", p.Name)})
	}
	// A token lives one refresh interval, an envelope the whole session
	// (plus the rounding of whole seconds).
	lives := p.RefreshInterval + 2*time.Second
	if inHeader {
		lives = p.AbsoluteTimeout + 2*time.Second
	}
	if d, ok := duration(prov["max_lifetime"]); ok && d < lives {
		c.r.add(Problem{Severity: Error, Check: "jwt_authn.max_lifetime", Where: where,
			Problem: fmt.Sprintf("max_lifetime %s is shorter than the pool's tokens live (%s)", d, lives),
			Breaks:  "Envoy refuses the pool's tokens: every request goes to the service (the cost of opaque mode: 0.34× plain Envoy's throughput)",
			Fix:     fmt.Sprintf("max_lifetime: %ds", int(lives.Seconds()))})
	}
	c.rules(s, f, name)
	c.jwks(where, prov)
	return name, prov
}

// envelopeRoute checks that the established route of a pool whose token is
// an envelope in the upstream's session header gives the upstream its own
// value back, and keeps a repeat of it from the client.
func (c *checker) envelopeRoute(p *affinity.Pool, s *site, rt route, payload string) {
	_, header := tokenCarrier(p)
	restore := "%DYNAMIC_METADATA(" + extproc.JWTFilterName + ":" + orDefault(payload, "affinity") + ":sid)%"
	restored, dropped := false, false
	for _, level := range []map[string]any{rt.r, rt.vh, rt.rc} {
		for _, h := range list(level["request_headers_to_add"]) {
			if strings.EqualFold(str(get(h, "header", "key")), header) && str(get(h, "header", "value")) == restore {
				restored = true
			}
		}
		for _, name := range strs(level["response_headers_to_remove"]) {
			dropped = dropped || strings.EqualFold(name, header)
		}
	}
	if !restored {
		c.r.add(Problem{Severity: Error, Check: "envelope.restore", Where: rt.where(s.listener),
			Problem: fmt.Sprintf("the route does not put the upstream's own value back into %s", header),
			Breaks:  "the upstream receives the envelope instead of the session id it issued: every established request is refused (MCP: 404, the client starts over)",
			Fix:     fmt.Sprintf("request_headers_to_add: [{header: {key: %s, value: %q}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]", header, restore)})
	}
	if !dropped {
		c.r.add(Problem{Severity: Warning, Check: "envelope.response", Where: rt.where(s.listener),
			Problem: fmt.Sprintf("the route passes a response's %s to the client", header),
			Breaks:  "an upstream that repeats its session id hands the client the bare value in place of its envelope: the client's next request is a new session",
			Fix:     fmt.Sprintf("response_headers_to_remove: [%s]", header)})
	}
}

// rules checks that a missing or failed token is not an error.
func (c *checker) rules(s *site, f httpFilter, provider string) {
	var reqs []any
	for _, r := range list(f.cfg["rules"]) {
		reqs = append(reqs, get(r, "requires"))
	}
	for _, rq := range obj(f.cfg["requirement_map"]) {
		reqs = append(reqs, rq)
	}
	for _, rq := range reqs {
		if str(get(rq, "provider_name")) == provider {
			c.r.add(Problem{Severity: Error, Check: "jwt_authn.rules", Where: s.where(f),
				Problem: fmt.Sprintf("a rule requires provider %q outright", provider),
				Breaks:  "a request without a valid token (every new or expired session) gets 401: no session starts",
				Fix:     fmt.Sprintf("requires: {requires_any: {requirements: [{provider_name: %s}, {allow_missing_or_failed: {}}]}}", provider)})
			return
		}
	}
}

// failoverVerified checks, on an established route, what brings a
// failed-over response to the service: jwt_authn copies the claim p into
// x-affinity-primary, the header-based stateful_session filter marks the
// response another host served, and the ext_proc (its matcher skipping
// unmarked responses) sends it the response.
func (c *checker) failoverVerified(p *affinity.Pool, s *site, rt route, ours []httpFilter, prov map[string]any) {
	var responder *httpFilter
	for _, f := range ours {
		if on := extProcOn(f, rt); on.enabled && on.response == "SEND" {
			responder = &f
			break
		}
	}
	if responder == nil {
		c.r.add(Problem{Severity: Error, Check: "failover.response", Where: rt.where(s.listener),
			Problem: "no ext_proc filter of the service sends this route's response headers",
			Breaks:  rebindBreaks,
			Fix:     "processing_mode: {request_header_mode: SKIP, response_header_mode: SEND} on the filter (" + fixGenerated + ")"})
		return
	}
	if !slices.Contains(strs(responder.cfg["response_attributes"]), extproc.CookieAttribute) {
		c.r.add(Problem{Severity: Error, Check: "failover.response", Where: s.where(*responder),
			Problem: "response_attributes does not list " + extproc.CookieAttribute,
			Breaks:  "the service never saw this request: without its cookie it cannot re-bind the session. " + rebindBreaks,
			Fix:     "response_attributes: [xds.cluster_name, \"request.headers['cookie']\"]"})
	}
	if !responder.wrapped {
		c.r.add(Problem{Severity: Warning, Check: "failover.mark", Where: s.where(*responder),
			Problem: "the ext_proc is not wrapped in an ExtensionWithMatcher that skips unmarked responses",
			Breaks:  "every established response costs a message to the service",
			Fix:     fixGenerated})
		return
	}
	marked := false
	for _, f := range s.byType(typeStatefulSession) {
		state := get(f.cfg, "session_state", "typed_config")
		if typeName(state) == typeHeaderSession && str(get(state, "name")) == extproc.PrimaryHeader && sessionOn(f, rt) {
			marked = true
			if f.index < responder.index {
				c.r.add(Problem{Severity: Error, Check: "filter.order", Where: s.where(f),
					Problem: "the stateful_session filter that marks failovers comes before the ext_proc",
					Breaks:  "responses pass filters in reverse order: the ext_proc's matcher reads the response before it is marked. " + rebindBreaks,
					Fix:     "put the stateful_session filter after the ext_proc, just before the router"})
			}
		}
	}
	copies := slices.ContainsFunc(list(prov["claim_to_headers"]), func(h any) bool {
		return str(get(h, "claim_name")) == affinity.PrimaryClaim && str(get(h, "header_name")) == extproc.PrimaryHeader
	})
	if !marked || !copies {
		c.r.add(Problem{Severity: Error, Check: "failover.mark", Where: rt.where(s.listener),
			Problem: fmt.Sprintf("a response another host served is not marked: needs jwt_authn claim_to_headers {header_name: %s, claim_name: %s} and a header-based stateful_session filter reading %s on this route", extproc.PrimaryHeader, affinity.PrimaryClaim, extproc.PrimaryHeader),
			Breaks:  "the ext_proc's matcher skips every established response. " + rebindBreaks,
			Fix:     fixGenerated})
		return
	}
	if !c.removesEarly(s, extproc.PrimaryHeader) {
		c.r.add(Problem{Severity: Error, Check: "hcm.early_header_removal", Where: fmt.Sprintf("listener %q", s.listener),
			Problem: "a client's own " + extproc.PrimaryHeader + " header is not removed before the filters run",
			Breaks:  "the stateful_session filter reads the first copy: a client can name the host its request goes to",
			Fix:     "early_header_mutation_extensions: [{name: envoy.http.early_header_mutation.header_mutation, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation, mutations: [{remove: x-affinity-primary}]}}]"})
	}
}

// removesEarly tells whether the connection manager removes a client's
// header before any filter.
func (c *checker) removesEarly(s *site, header string) bool {
	for _, ext := range list(s.hcm["early_header_mutation_extensions"]) {
		tc := get(ext, "typed_config")
		if typeName(tc) != typeHeaderMutation {
			continue
		}
		for _, m := range list(get(tc, "mutations")) {
			if str(get(m, "remove")) == header {
				return true
			}
		}
	}
	return false
}

// failoverOpaque checks that an opaque route marks a response another host
// served and that a response-only ext_proc sends it to the service.
func (c *checker) failoverOpaque(p *affinity.Pool, s *site, rt route, ours []httpFilter) {
	marks := false
	for _, level := range []map[string]any{rt.r, rt.vh, rt.rc} {
		for _, h := range list(level["response_headers_to_add"]) {
			if str(get(h, "header", "key")) == extproc.PrimaryHeader {
				marks = true
			}
		}
	}
	var responder *httpFilter
	for _, f := range ours {
		if on := extProcOn(f, rt); on.enabled && on.request == "SKIP" && on.response == "SEND" {
			responder = &f
			break
		}
	}
	if !marks || responder == nil {
		missing := "response_headers_to_add " + extproc.PrimaryHeader + " (a %CEL(...)% comparing upstream.address with the decision)"
		if marks {
			missing = "a response-only ext_proc filter wrapped in an ExtensionWithMatcher that runs on marked responses"
		}
		c.r.add(Problem{Severity: Error, Check: "failover.mark", Where: rt.where(s.listener),
			Problem: "no " + missing,
			Breaks:  rebindBreaks,
			Fix:     fixGenerated})
		return
	}
	if !slices.Contains(strs(responder.cfg["response_attributes"]), extproc.CookieAttribute) {
		c.r.add(Problem{Severity: Error, Check: "failover.response", Where: s.where(*responder),
			Problem: "response_attributes does not list " + extproc.CookieAttribute,
			Breaks:  "the service cannot read the session of a marked response. " + rebindBreaks,
			Fix:     "response_attributes: [xds.cluster_name, \"request.headers['cookie']\"]"})
	}
}

// native checks the stateful_session cookie filter of a native pool.
func (c *checker) native(p *affinity.Pool, s *site, ours []httpFilter) {
	var found *httpFilter
	for _, f := range s.byType(typeStatefulSession) {
		state := get(f.cfg, "session_state", "typed_config")
		if typeName(state) == typeCookieSession {
			if str(get(state, "cookie", "name")) == p.Cookie.Name {
				found = &f
				break
			}
			c.r.add(Problem{Severity: Error, Check: "stateful_session.cookie", Where: s.where(f),
				Problem: fmt.Sprintf("the session cookie is %q, the pool's cookie.name is %q", str(get(state, "cookie", "name")), p.Cookie.Name),
				Breaks:  "the established route and the fallback hash read one cookie, Envoy writes another: sessions are not kept",
				Fix:     fmt.Sprintf("cookie: {name: %s, path: /}", p.Cookie.Name)})
			return
		}
	}
	if found == nil {
		c.r.add(Problem{Severity: Error, Check: "stateful_session.missing", Where: fmt.Sprintf("listener %q", s.listener),
			Problem: "no stateful_session filter with a cookie session state, which native mode keeps sessions with",
			Breaks:  "Envoy keeps no session: each request without a decision goes where the load balancer sends it",
			Fix:     fmt.Sprintf("add envoy.filters.http.stateful_session with envoy.http.stateful_session.cookie {cookie: {name: %s, path: /}} before the ext_proc (%s)", p.Cookie.Name, fixGenerated)})
		return
	}
	for _, o := range ours {
		if o.index < found.index {
			c.r.add(Problem{Severity: Warning, Check: "filter.order", Where: s.where(o),
				Problem: "the ext_proc comes before the stateful_session filter",
				Breaks:  "differs from the tested order (stateful_session, ext_proc, router)",
				Fix:     "put stateful_session first"})
		}
	}
}

// statefulSessionHeader checks Istio's persistent-session-header setup:
// the ext_proc writes the header before the stateful_session filter reads
// it.
func (c *checker) statefulSessionHeader(p *affinity.Pool, s *site, ours []httpFilter) {
	reads := func(f httpFilter) bool {
		states := []any{get(f.cfg, "session_state", "typed_config")}
		for _, rt := range s.routes {
			// Istio sets the session state per route.
			if per, _ := perRoute(rt, f.name); per != nil {
				states = append(states, get(per, "stateful_session", "session_state", "typed_config"))
			}
		}
		return slices.ContainsFunc(states, func(st any) bool {
			return typeName(st) == typeHeaderSession && str(get(st, "name")) == p.Output.StatefulSession
		})
	}
	for _, f := range s.byType(typeStatefulSession) {
		if !reads(f) {
			continue
		}
		for _, o := range ours {
			if o.index > f.index {
				c.r.add(Problem{Severity: Error, Check: "filter.order", Where: s.where(o),
					Problem: fmt.Sprintf("the ext_proc comes after the stateful_session filter reading %s", p.Output.StatefulSession),
					Breaks:  "the session filter reads the header before the service writes it: the service's decision is ignored",
					Fix:     "insert the ext_proc before envoy.filters.http.stateful_session"})
			}
		}
		return
	}
	c.r.add(Problem{Severity: Error, Check: "stateful_session.missing", Where: fmt.Sprintf("listener %q", s.listener),
		Problem: "no stateful_session filter with a header session state reading " + p.Output.StatefulSession,
		Breaks:  "nothing reads the header the service writes: its decisions are ignored",
		Fix:     "Istio: label the Service istio.io/persistent-session-header: " + p.Output.StatefulSession})
}
