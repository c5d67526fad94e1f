package doctor

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

// Service is what the doctor knows of the service: the pools in force and
// the signing keys.
type Service struct {
	Pools []*affinity.Pool
	// Keys signs the session tokens (nil: the JWKS is not compared).
	Keys *affinity.Keyring
	// Now is when the signing key is chosen.
	Now time.Time
}

// Check compares Envoy's configuration with the service's pools. When e is
// live, client fetches the JWKS Envoy reads (nil: it is not fetched).
func Check(ctx context.Context, e *Envoy, svc Service, client *http.Client) *Report {
	x := &examination{ctx: ctx, e: e, svc: svc, client: client, r: &Report{Envoy: e.Source}}
	for _, p := range svc.Pools {
		x.r.Pools = append(x.r.Pools, p.Name)
		x.pool(p)
	}
	x.r.sort()
	return x.r
}

// examination is one Envoy examined against the service: each rule of the
// catalogue its steps find broken is added to the report.
type examination struct {
	ctx    context.Context
	e      *Envoy
	svc    Service
	client *http.Client
	r      *Report
}

// httpFilter is one entry of an HTTP connection manager's filter list.
type httpFilter struct {
	index    int
	name     string
	typ      string
	cfg      map[string]any
	wrapped  bool // in an ExtensionWithMatcher: a matcher may skip it
	disabled bool // off unless a route turns it on
}

// route is one route of a route configuration.
type route struct {
	name, vhost string
	rc, vh, r   map[string]any
}

func (rt route) where(listener string) string {
	name := rt.name
	if name == "" {
		name = "(unnamed)"
	}
	return fmt.Sprintf("listener %q, route %q (virtual host %q)", listener, name, rt.vhost)
}

// site is an HTTP connection manager whose routes lead to a pool's
// clusters.
type site struct {
	listener string
	filters  []httpFilter
	routes   []route // the routes to the pool's clusters, in order
	hcm      map[string]any
}

func (s *site) where(f httpFilter) string {
	return fmt.Sprintf("listener %q, http filter %q", s.listener, f.name)
}

func (s *site) byType(typ string) []httpFilter {
	var out []httpFilter
	for _, f := range s.filters {
		if f.typ == typ {
			out = append(out, f)
		}
	}
	return out
}

// sites lists every HTTP connection manager with its filters and routes.
func (x *examination) sites() []*site {
	var out []*site
	for _, l := range x.e.Listeners {
		for _, hcm := range l.HCMs {
			s := &site{listener: l.Name, hcm: hcm}
			for i, f := range list(hcm["http_filters"]) {
				hf := httpFilter{index: i, name: str(get(f, "name")), cfg: x.e.filterConfig(f), disabled: boolean(get(f, "disabled"))}
				hf.typ = typeName(hf.cfg)
				if hf.typ == typeWithMatcher {
					hf.cfg = obj(get(hf.cfg, "extension_config", "typed_config"))
					hf.typ = typeName(hf.cfg)
					hf.wrapped = true
				}
				s.filters = append(s.filters, hf)
			}
			rc := x.e.routeConfig(hcm)
			for _, vh := range list(get(rc, "virtual_hosts")) {
				for _, r := range list(get(vh, "routes")) {
					s.routes = append(s.routes, route{name: str(get(r, "name")), vhost: str(get(vh, "name")), rc: rc, vh: obj(vh), r: obj(r)})
				}
			}
			out = append(out, s)
		}
	}
	return out
}

// clusters are the clusters a route sends to.
func (rt route) clusters() []string {
	if c := str(get(rt.r, "route", "cluster")); c != "" {
		return []string{c}
	}
	var out []string
	for _, w := range list(get(rt.r, "route", "weighted_clusters", "clusters")) {
		out = append(out, str(get(w, "name")))
	}
	return out
}

// perRoute is a filter's per-route configuration on a route (route, then
// virtual host, then route configuration), unwrapped from a FilterConfig;
// enabled tells whether a FilterConfig turns the filter on or off there
// (nil: it does not say).
func perRoute(rt route, filter string) (cfg map[string]any, enabled *bool) {
	for _, level := range []map[string]any{rt.r, rt.vh, rt.rc} {
		if v := obj(get(level, "typed_per_filter_config", filter)); v != nil {
			if typeName(v) == typeFilterConfig {
				on := !boolean(v["disabled"])
				return obj(v["config"]), &on
			}
			return v, nil
		}
	}
	return nil, nil
}

// procOn is what an ext_proc filter does on a route.
type procOn struct {
	enabled          bool
	request          string // request headers: SEND or SKIP
	response         string // response headers: SEND or SKIP
	reqBody, rspBody string
}

func headerMode(v any) string {
	if s := str(v); s != "" && s != "DEFAULT" {
		return s
	}
	return "SEND"
}

func bodyMode(v any) string {
	if s := str(v); s != "" {
		return s
	}
	return "NONE"
}

// extProcOn works out an ext_proc filter's processing on a route.
func extProcOn(f httpFilter, rt route) procOn {
	mode := obj(f.cfg["processing_mode"])
	on := procOn{enabled: !f.disabled}
	per, enabled := perRoute(rt, f.name)
	if enabled != nil {
		on.enabled = *enabled
	}
	if typeName(per) == typeExtProcPerRoute {
		if boolean(per["disabled"]) {
			on.enabled = false
		}
		if m := obj(get(per, "overrides", "processing_mode")); m != nil {
			mode = m
		}
	}
	on.request, on.response = headerMode(mode["request_header_mode"]), headerMode(mode["response_header_mode"])
	on.reqBody, on.rspBody = bodyMode(mode["request_body_mode"]), bodyMode(mode["response_body_mode"])
	return on
}

// sessionOn tells whether a stateful_session filter runs on a route.
func sessionOn(f httpFilter, rt route) bool {
	on := !f.disabled
	per, enabled := perRoute(rt, f.name)
	if enabled != nil {
		on = *enabled
	}
	if typeName(per) == typeSessionPerRoute && boolean(per["disabled"]) {
		on = false
	}
	return on
}

// ours are the ext_proc filters that talk to the service: those that
// exchange envoy.lb metadata, or every ext_proc when none does (then the
// namespace checks report it).
func (s *site) ours() []httpFilter {
	all := s.byType(typeExtProc)
	var out []httpFilter
	for _, f := range all {
		ns := append(strs(get(f.cfg, "metadata_options", "receiving_namespaces", "untyped")),
			strs(get(f.cfg, "metadata_options", "forwarding_namespaces", "untyped"))...)
		if slices.Contains(ns, extproc.MetadataNamespace) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return all
	}
	return out
}

// serviceClusters are the clusters that reach the service itself (the
// ext_proc's gRPC service and the JWKS), never a pool's.
func (x *examination) serviceClusters(sites []*site) map[string]bool {
	out := map[string]bool{}
	for _, s := range sites {
		for _, f := range s.byType(typeExtProc) {
			out[str(get(f.cfg, "grpc_service", "envoy_grpc", "cluster_name"))] = true
		}
		for _, f := range s.byType(typeJwtAuthn) {
			for _, p := range obj(f.cfg["providers"]) {
				out[str(get(p, "remote_jwks", "http_uri", "cluster"))] = true
			}
		}
	}
	return out
}

// pool checks everything one pool needs.
func (x *examination) pool(p *affinity.Pool) {
	all := x.sites()
	var targets []string
	if p.MatchAll {
		service := x.serviceClusters(all)
		for _, s := range all {
			if len(s.ours()) == 0 {
				continue
			}
			for _, rt := range s.routes {
				for _, cl := range rt.clusters() {
					if !service[cl] && !slices.Contains(targets, cl) {
						targets = append(targets, cl)
					}
				}
			}
		}
		if len(targets) == 0 && !slices.ContainsFunc(all, func(s *site) bool { return len(s.ours()) > 0 }) {
			x.r.add(extProcNowhere.at("pool "+p.Name, "no HTTP connection manager has an ext_proc filter"))
			return
		}
		if len(targets) == 0 {
			x.r.add(routeNowhere.at("pool "+p.Name, "no route leads to a cluster through an HTTP connection manager with an ext_proc filter"))
			return
		}
	} else {
		targets = []string{p.Name}
		if _, ok := x.e.Clusters[p.Name]; !ok {
			x.r.add(poolClusterMissing.at("pool "+p.Name,
				fmt.Sprintf("Envoy has no cluster %q (a named pool takes the requests routed to the cluster of its name)", p.Name),
				"${cluster}", strconv.Quote(p.Name)))
			return
		}
	}
	var sites []*site
	for _, s := range all {
		var routes []route
		for _, rt := range s.routes {
			if slices.ContainsFunc(rt.clusters(), func(cl string) bool { return slices.Contains(targets, cl) }) {
				routes = append(routes, rt)
			}
		}
		if len(routes) > 0 {
			s.routes = routes
			sites = append(sites, s)
		}
	}
	if len(sites) == 0 {
		x.r.add(routeMissing.at(fmt.Sprintf("cluster %q", targets[0]), "no route of any listener sends requests to the cluster",
			"${pool}", p.Name))
		return
	}
	var payload string
	for _, s := range sites {
		if k := x.site(p, s); k != "" {
			payload = k
		}
	}
	for _, cl := range targets {
		x.cluster(p, cl, sites, payload)
		x.hosts(p, cl)
	}
	if p.Source != nil && p.Source.Kind == affinity.SourceEnvoy {
		if _, ok := x.e.Clusters[p.Source.Envoy.Cluster]; !ok {
			x.r.add(discoveryCluster.at("pool "+p.Name,
				fmt.Sprintf("discovery.envoy names cluster %q, which Envoy does not have", p.Source.Envoy.Cluster)))
		}
	}
}

// metaIs tells whether a metadata reference names namespace key and path.
func metaIs(v any, key string, path ...string) bool {
	if str(get(v, "key")) != key && str(get(v, "filter")) != key {
		return false
	}
	got := list(get(v, "path"))
	if len(got) != len(path) {
		return false
	}
	for i, seg := range got {
		if str(get(seg, "key")) != path[i] {
			return false
		}
	}
	return true
}

// usesMetadata tells whether the pool's decision reaches Envoy as envoy.lb
// metadata (not through an output header only a platform reads).
func usesMetadata(p *affinity.Pool) bool {
	return p.Output.Header == "" && p.Output.StatefulSession == ""
}

// rebinds tells whether the pool re-binds failed-over sessions: the
// service must see the response another host served.
func rebinds(p *affinity.Pool) bool {
	return usesMetadata(p) && !p.Failback && (p.Mode == affinity.ModeVerified || p.Mode == affinity.ModeOpaque)
}

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

	var provider string
	var prov map[string]any
	if p.Mode == affinity.ModeVerified {
		provider, prov = x.jwt(p, s, ours)
	}
	payload := str(prov["payload_in_metadata"])

	// Which routes decide (the service must see their requests) and which
	// are established (Envoy alone routes them).
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
			if rebinds(p) && p.Mode == affinity.ModeVerified {
				x.failoverVerified(p, s, rt, ours, prov)
			}
			if inHeader, _ := tokenCarrier(p); inHeader && p.Mode == affinity.ModeVerified {
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
		if p.Mode == affinity.ModeOpaque && rebinds(p) {
			x.failoverOpaque(p, s, rt, ours)
		}
	}
	if p.Mode == affinity.ModeVerified && !sawEstablished && prov != nil {
		x.r.add(establishedMissing.at(fmt.Sprintf("listener %q", s.listener),
			fmt.Sprintf("no route matches a verified token (match.dynamic_metadata on filter %s, path [%s, %s]) ahead of the deciding route", extproc.JWTFilterName, orDefault(payload, "affinity"), affinity.HostClaim)))
	}
	if p.Mode == affinity.ModeVerified && payload != "" {
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

// isCatchAll tells whether a route matches every path with no further
// condition.
func isCatchAll(rt route) bool {
	m := obj(rt.r["match"])
	if str(m["prefix"]) != "/" && get(m, "safe_regex") == nil && str(get(m, "path_separated_prefix")) != "/" {
		return false
	}
	return m["headers"] == nil && m["dynamic_metadata"] == nil && m["query_parameters"] == nil
}
