package doctor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
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
func (x *examination) jwt(p *affinity.Pool, s *site, ours []httpFilter) (string, map[string]any) {
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
		x.r.add(jwtProvider.at(fmt.Sprintf("listener %q", s.listener), problem+" for verified pool "+p.Name))
		return "", nil
	}
	where := fmt.Sprintf("listener %q, http filter %q, provider %q", s.listener, f.name, name)
	for _, o := range ours {
		if o.index < f.index {
			x.r.add(extProcBeforeJWT.at(s.where(o), fmt.Sprintf("the ext_proc filter comes before jwt_authn %q", f.name)))
		}
	}
	payload := str(prov["payload_in_metadata"])
	if payload == "" {
		x.r.add(payloadInMetadata.at(where, "payload_in_metadata is not set"))
	}
	if !boolean(prov["clear_route_cache"]) {
		x.r.add(clearRouteCache.at(where, "clear_route_cache is false"))
	}
	if prov["jwt_cache_config"] == nil {
		x.r.add(jwtCacheConfig.at(where, "jwt_cache_config is not set"))
	}
	skew := 60 * time.Second // Envoy's default
	if n, ok := number(prov["clock_skew_seconds"]); ok {
		skew = time.Duration(n) * time.Second
	}
	if skew > p.RefreshInterval/10 {
		x.r.add(clockSkew.at(where,
			fmt.Sprintf("clock_skew_seconds is %d s, more than a tenth of the pool's refresh interval (%s)", int(skew.Seconds()), p.RefreshInterval),
			"${skew}", strconv.Itoa(int(skew.Seconds()))))
	}
	aud := strs(prov["audiences"])
	switch {
	case len(aud) > 0 && !slices.Contains(aud, p.Name):
		x.r.add(audiencesOther.at(where, fmt.Sprintf("audiences %v does not list the pool's name %q, which its tokens carry (claim aud)", aud, p.Name),
			"${pool}", p.Name))
	case len(aud) == 0 && len(x.svc.Pools) > 1:
		x.r.add(audiencesUnset.at(where, "audiences is not set", "${pool}", p.Name))
	}
	// A token lives one refresh interval, an envelope the whole session
	// (plus the rounding of whole seconds).
	lives := p.RefreshInterval + 2*time.Second
	if inHeader {
		lives = p.AbsoluteTimeout + 2*time.Second
	}
	if d, ok := duration(prov["max_lifetime"]); ok && d < lives {
		x.r.add(maxLifetime.at(where, fmt.Sprintf("max_lifetime %s is shorter than the pool's tokens live (%s)", d, lives),
			"${lifetime}", strconv.Itoa(int(lives.Seconds()))))
	}
	x.rules(s, f, name)
	x.jwks(where, prov)
	return name, prov
}

// envelopeRoute checks that the established route of a pool whose token is
// an envelope in the upstream's session header gives the upstream its own
// value back, and keeps a repeat of it from the client.
func (x *examination) envelopeRoute(p *affinity.Pool, s *site, rt route, payload string) {
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
		x.r.add(envelopeRestore.at(rt.where(s.listener), fmt.Sprintf("the route does not put the upstream's own value back into %s", header),
			"${header}", header, "${value}", strconv.Quote(restore)))
	}
	if !dropped {
		x.r.add(envelopeResponse.at(rt.where(s.listener), fmt.Sprintf("the route passes a response's %s to the client", header), "${header}", header))
	}
}

// rules checks that a missing or failed token is not an error.
func (x *examination) rules(s *site, f httpFilter, provider string) {
	var reqs []any
	for _, r := range list(f.cfg["rules"]) {
		reqs = append(reqs, get(r, "requires"))
	}
	for _, rq := range obj(f.cfg["requirement_map"]) {
		reqs = append(reqs, rq)
	}
	for _, rq := range reqs {
		if str(get(rq, "provider_name")) == provider {
			x.r.add(jwtRequired.at(s.where(f), fmt.Sprintf("a rule requires provider %q outright", provider), "${provider}", provider))
			return
		}
	}
}

// failoverVerified checks, on an established route, what brings a
// failed-over response to the service: jwt_authn copies the claim p into
// x-affinity-primary, the header-based stateful_session filter marks the
// response another host served, and the ext_proc (its matcher skipping
// unmarked responses) sends it the response.
func (x *examination) failoverVerified(p *affinity.Pool, s *site, rt route, ours []httpFilter, prov map[string]any) {
	var responder *httpFilter
	for _, f := range ours {
		if on := extProcOn(f, rt); on.enabled && on.response == "SEND" {
			responder = &f
			break
		}
	}
	if responder == nil {
		x.r.add(failoverNoResponse.at(rt.where(s.listener), "no ext_proc filter of the service sends this route's response headers"))
		return
	}
	if !slices.Contains(strs(responder.cfg["response_attributes"]), extproc.CookieAttribute) {
		x.r.add(failoverCookie.at(s.where(*responder), "response_attributes does not list "+extproc.CookieAttribute))
	}
	if !responder.wrapped {
		x.r.add(failoverUnwrapped.at(s.where(*responder), "the ext_proc is not wrapped in an ExtensionWithMatcher that skips unmarked responses"))
		return
	}
	marked := false
	for _, f := range s.byType(typeStatefulSession) {
		state := get(f.cfg, "session_state", "typed_config")
		if typeName(state) == typeHeaderSession && str(get(state, "name")) == extproc.PrimaryHeader && sessionOn(f, rt) {
			marked = true
			if f.index < responder.index {
				x.r.add(markerBeforeExtProc.at(s.where(f), "the stateful_session filter that marks failovers comes before the ext_proc"))
			}
		}
	}
	copies := slices.ContainsFunc(list(prov["claim_to_headers"]), func(h any) bool {
		return str(get(h, "claim_name")) == affinity.PrimaryClaim && str(get(h, "header_name")) == extproc.PrimaryHeader
	})
	if !marked || !copies {
		x.r.add(failoverUnmarked.at(rt.where(s.listener),
			fmt.Sprintf("a response another host served is not marked: needs jwt_authn claim_to_headers {header_name: %s, claim_name: %s} and a header-based stateful_session filter reading %s on this route", extproc.PrimaryHeader, affinity.PrimaryClaim, extproc.PrimaryHeader)))
		return
	}
	if !x.removesEarly(s, extproc.PrimaryHeader) {
		x.r.add(earlyHeaderRemoval.at(fmt.Sprintf("listener %q", s.listener), "a client's own "+extproc.PrimaryHeader+" header is not removed before the filters run"))
	}
}

// removesEarly tells whether the connection manager removes a client's
// header before any filter.
func (x *examination) removesEarly(s *site, header string) bool {
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
func (x *examination) failoverOpaque(p *affinity.Pool, s *site, rt route, ours []httpFilter) {
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
		x.r.add(failoverUnmarkedOpaque.at(rt.where(s.listener), "no "+missing))
		return
	}
	if !slices.Contains(strs(responder.cfg["response_attributes"]), extproc.CookieAttribute) {
		x.r.add(failoverCookieOpaque.at(s.where(*responder), "response_attributes does not list "+extproc.CookieAttribute))
	}
}

// native checks the stateful_session cookie filter of a native pool.
func (x *examination) native(p *affinity.Pool, s *site, ours []httpFilter) {
	var found *httpFilter
	for _, f := range s.byType(typeStatefulSession) {
		state := get(f.cfg, "session_state", "typed_config")
		if typeName(state) == typeCookieSession {
			if str(get(state, "cookie", "name")) == p.Cookie.Name {
				found = &f
				break
			}
			x.r.add(sessionCookie.at(s.where(f), fmt.Sprintf("the session cookie is %q, the pool's cookie.name is %q", str(get(state, "cookie", "name")), p.Cookie.Name),
				"${cookie}", p.Cookie.Name))
			return
		}
	}
	if found == nil {
		x.r.add(sessionCookieMissing.at(fmt.Sprintf("listener %q", s.listener),
			"no stateful_session filter with a cookie session state, which native mode keeps sessions with", "${cookie}", p.Cookie.Name))
		return
	}
	for _, o := range ours {
		if o.index < found.index {
			x.r.add(extProcBeforeSession.at(s.where(o), "the ext_proc comes before the stateful_session filter"))
		}
	}
}

// statefulSessionHeader checks Istio's persistent-session-header setup:
// the ext_proc writes the header before the stateful_session filter reads
// it.
func (x *examination) statefulSessionHeader(p *affinity.Pool, s *site, ours []httpFilter) {
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
				x.r.add(extProcAfterHeaderSession.at(s.where(o), fmt.Sprintf("the ext_proc comes after the stateful_session filter reading %s", p.Output.StatefulSession)))
			}
		}
		return
	}
	x.r.add(headerSessionMissing.at(fmt.Sprintf("listener %q", s.listener),
		"no stateful_session filter with a header session state reading "+p.Output.StatefulSession, "${header}", p.Output.StatefulSession))
}
