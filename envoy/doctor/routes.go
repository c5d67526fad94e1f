package doctor

import (
	"fmt"
	"strings"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

// site checks one HTTP connection manager's filters and routes for a pool;
// it returns the jwt_authn payload_in_metadata key it found (verified).
func (x *examination) site(p *affinity.Pool, s *site) string {
	ours := s.ours()
	if len(ours) == 0 {
		x.r.add(extProcMissing.at(fmt.Sprintf("listener %q", s.listener),
			"no ext_proc filter in the HTTP filters, though routes go to pool "+p.Name+"'s cluster"))
		return ""
	}
	for _, f := range ours {
		x.extProcFilter(p, s, f)
	}

	// A verified pool whose sessions carry no token takes opaque mode's
	// configuration: nothing for jwt_authn to verify.
	mode := p.EnvoyMode()
	var provider string
	var prov map[string]any
	if mode == affinity.ModeVerified {
		provider, prov = x.jwt(p, s, ours)
	}
	payload := str(prov["payload_in_metadata"])

	// Which routes decide (the service must see their requests) and which
	// are established (Envoy alone routes them). A verified pool's route on
	// jwt_authn's metadata is established even when no token can match it.
	established := func(rt route) bool {
		switch p.Mode {
		case affinity.ModeVerified:
			for _, dm := range list(get(rt.r, "match", "dynamic_metadata")) {
				if str(get(dm, "filter")) == extproc.JWTFilterName {
					return true
				}
			}
		case affinity.ModeNative:
			for _, h := range list(get(rt.r, "match", "headers")) {
				if strings.EqualFold(str(get(h, "name")), "cookie") {
					return true
				}
			}
		}
		return false
	}
	var sawEstablished, sawDecide bool
	for _, rt := range s.routes {
		var decider *httpFilter
		var on procOn
		for _, f := range ours {
			if o := extProcOn(f, rt); o.enabled && o.request == "SEND" {
				decider, on = &f, o
				break
			}
		}
		if established(rt) {
			sawEstablished = true
			if sawDecide {
				x.r.add(routeOrder.at(rt.where(s.listener), "the established-session route comes after a route that takes the same requests"))
			}
			if decider != nil {
				x.r.add(establishedAsked(p).at(rt.where(s.listener),
					fmt.Sprintf("ext_proc filter %q sends the request headers of established sessions", decider.name)))
			}
			if rebinds(p) && mode == affinity.ModeVerified {
				x.failoverVerified(p, s, rt, ours, prov)
			}
			if inHeader, _ := tokenCarrier(p); inHeader && mode == affinity.ModeVerified {
				x.envelopeRoute(p, s, rt, payload)
			}
			continue
		}
		sawDecide = sawDecide || isCatchAll(rt)
		if decider == nil {
			x.r.add(requestHeadersSkipped.at(rt.where(s.listener),
				"no ext_proc filter of the service sends this route's request headers (processing_mode request_header_mode SKIP, or the filter is disabled here)"))
			continue
		}
		if (p.Mode == affinity.ModeVerified || p.Mode == affinity.ModeOpaque) && on.response != "SEND" {
			x.r.add(responseHeadersSkipped.at(rt.where(s.listener), fmt.Sprintf("ext_proc filter %q skips response headers here", decider.name)))
		}
		if on.reqBody != "NONE" || on.rspBody != "NONE" {
			x.r.add(bodiesSent.at(rt.where(s.listener),
				fmt.Sprintf("ext_proc filter %q sends bodies (request_body_mode %s, response_body_mode %s)", decider.name, on.reqBody, on.rspBody)))
		}
		if mode == affinity.ModeOpaque && rebinds(p) {
			x.failoverOpaque(p, s, rt, ours)
		}
	}
	if mode == affinity.ModeVerified && !sawEstablished && prov != nil {
		x.r.add(establishedMissing.at(fmt.Sprintf("listener %q", s.listener),
			fmt.Sprintf("no route matches a verified token (match.dynamic_metadata on filter %s, path [%s, %s]) ahead of the deciding route", extproc.JWTFilterName, orDefault(payload, "affinity"), affinity.HostClaim)))
	}
	if mode == affinity.ModeVerified && payload != "" {
		for _, rt := range s.routes {
			for _, dm := range list(get(rt.r, "match", "dynamic_metadata")) {
				if str(get(dm, "filter")) == extproc.JWTFilterName && !metaIs(dm, extproc.JWTFilterName, payload, affinity.HostClaim) {
					x.r.add(establishedPath.at(rt.where(s.listener),
						fmt.Sprintf("the route matches jwt_authn metadata at a path other than [%s, %s] (provider %q's payload_in_metadata, claim h)", payload, affinity.HostClaim, provider),
						"${payload}", payload))
				}
			}
		}
	}
	if p.Mode == affinity.ModeNative {
		x.native(p, s, ours)
	}
	if p.Output.StatefulSession != "" {
		x.statefulSessionHeader(p, s, ours)
	}
	return payload
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// establishedAsked is the rule of an established route whose request
// headers go to the service: its fix depends on the mode.
func establishedAsked(p *affinity.Pool) *Rule {
	if p.Mode == affinity.ModeNative {
		return establishedAsksNative
	}
	return establishedAsks
}
