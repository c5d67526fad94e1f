package doctor

import (
	"fmt"
	"slices"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

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
