package doctor

import (
	"fmt"
	"slices"

	"github.com/envoy-affinity/envoy-affinity/extproc"
)

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

// isCatchAll tells whether a route matches every path with no further
// condition.
func isCatchAll(rt route) bool {
	m := obj(rt.r["match"])
	if str(m["prefix"]) != "/" && get(m, "safe_regex") == nil && str(get(m, "path_separated_prefix")) != "/" {
		return false
	}
	return m["headers"] == nil && m["dynamic_metadata"] == nil && m["query_parameters"] == nil
}
