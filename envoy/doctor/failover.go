package doctor

import (
	"fmt"
	"slices"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

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
	// A keyed session's key comes in envoy.lb: only a cookie session needs
	// its cookie.
	if p.CookieSessions() && !slices.Contains(strs(responder.cfg["response_attributes"]), extproc.CookieAttribute) {
		x.r.add(failoverCookieOpaque.at(s.where(*responder), "response_attributes does not list "+extproc.CookieAttribute))
	}
}
