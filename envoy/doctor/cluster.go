package doctor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

// minRetries is the least circuit_breakers max_retries the doctor accepts:
// when a host dies, every in-flight request of its sessions is retried at
// once, and Envoy's default of 3 concurrent retries fails the rest.
const minRetries = 100

// cluster checks a pool's cluster: its load-balancing policy, circuit
// breakers, and the retry policy of the routes to it.
func (x *examination) cluster(p *affinity.Pool, name string, sites []*site, payload string) {
	cl := x.e.Clusters[name]
	where := fmt.Sprintf("cluster %q", name)
	if cl == nil {
		x.r.add(routedClusterMissing.at(where, "routes name the cluster, but Envoy does not have it"))
		return
	}
	var routes []route
	for _, s := range sites {
		for _, rt := range s.routes {
			if slices.Contains(rt.clusters(), name) {
				routes = append(routes, rt)
				x.retry(p, s, rt)
			}
		}
	}
	if p.Output.StatefulSession == "" {
		x.overrideHost(p, where, cl, payload, routes)
	}
	x.circuitBreakers(where, cl)
}

// overrideHost checks the cluster's override_host policy.
func (x *examination) overrideHost(p *affinity.Pool, where string, cl map[string]any, payload string, routes []route) {
	var oh map[string]any
	for _, pol := range list(get(cl, "load_balancing_policy", "policies")) {
		if tc := obj(get(pol, "typed_extension_config", "typed_config")); typeName(tc) == typeOverrideHost {
			oh = tc
		}
		break // Envoy uses the first policy it supports: the first listed
	}
	if oh == nil {
		x.r.add(overrideHostPolicy.at(where, "the cluster's load-balancing policy is not envoy.load_balancing_policies.override_host"))
		return
	}
	sources := list(oh["override_host_sources"])
	find := func(match func(any) bool) int { return slices.IndexFunc(sources, match) }
	decision := find(func(s any) bool { return metaIs(get(s, "metadata"), extproc.MetadataNamespace, extproc.DestinationKey) })
	if p.Output.Header != "" {
		decision = find(func(s any) bool { return strings.EqualFold(str(get(s, "header")), p.Output.Header) })
	}
	if decision < 0 {
		want := fmt.Sprintf("{metadata: {key: %s, path: [{key: %s}]}}", extproc.MetadataNamespace, extproc.DestinationKey)
		if p.Output.Header != "" {
			want = fmt.Sprintf("{header: %s}", p.Output.Header)
		}
		x.r.add(decisionSource.at(where, "override_host_sources does not read the service's decision "+want, "${source}", want))
	}
	if p.EnvoyMode() == affinity.ModeVerified {
		key := orDefault(payload, "affinity")
		jwtSource := find(func(s any) bool { return metaIs(get(s, "metadata"), extproc.JWTFilterName, key, affinity.HostClaim) })
		switch {
		case jwtSource < 0:
			x.r.add(tokenSource.at(where,
				fmt.Sprintf("override_host_sources does not read the verified token's claim h {metadata: {key: %s, path: [{key: %s}, {key: %s}]}}", extproc.JWTFilterName, key, affinity.HostClaim),
				"${payload}", key))
		case decision >= 0 && decision < jwtSource:
			x.r.add(sourceOrder.at(where, "the service's decision is read before the verified token's claim h"))
		}
	}
	if rebinds(p) && !metaIs(oh["selected_host_key"], extproc.MetadataNamespace, extproc.ServedKey) {
		x.r.add(selectedHostKey.at(where, fmt.Sprintf("selected_host_key is not {key: %s, path: [{key: %s}]}", extproc.MetadataNamespace, extproc.ServedKey)))
	}
	var fb map[string]any
	if pols := list(get(oh, "fallback_policy", "policies")); len(pols) > 0 {
		fb = obj(get(pols[0], "typed_extension_config", "typed_config"))
	}
	want, policy, hashes, ok := fallbackHashKey(p)
	if !ok {
		return // nothing a hash could keep
	}
	hashesKey := func(policies any) bool { return slices.ContainsFunc(list(policies), hashes) }
	hashed := hashesKey(get(fb, "consistent_hashing_lb_config", "hash_policy"))
	if t := typeName(fb); get(fb, "consistent_hashing_lb_config", "hash_policy") == nil &&
		(strings.HasSuffix(t, ".Maglev") || strings.HasSuffix(t, ".RingHash")) {
		// Without its own hash policy the fallback hashes by the route's.
		hashed = len(routes) > 0
		for _, rt := range routes {
			hashed = hashed && hashesKey(get(rt.r, "route", "hash_policy"))
		}
	}
	if !hashed {
		x.r.add(fallbackHash.at(where,
			fmt.Sprintf("the fallback policy does not hash the session's %s (Maglev or ring hash with a hash_policy on it)", want),
			"${hash}", policy))
	}
}

// fallbackHashKey is what keeps a session on one host while the service
// is away, which the fallback policy must hash: the pool's own answer
// (affinity.Pool.FallbackHash), which envoy-config prints too. It returns
// it in words, as a hash_policy entry, and as a test of an entry; ok is
// false when the pool has nothing Envoy could hash.
func fallbackHashKey(p *affinity.Pool) (want, policy string, hashes func(any) bool, ok bool) {
	switch h := p.FallbackHash(); {
	case h.Header != "":
		return "header " + strconv.Quote(h.Header), "{header: {header_name: " + h.Header + "}}",
			func(e any) bool { return strings.EqualFold(str(get(e, "header", "header_name")), h.Header) }, true
	case h.Query != "":
		return "query parameter " + strconv.Quote(h.Query), "{query_parameter: {name: " + h.Query + "}}",
			func(e any) bool { return str(get(e, "query_parameter", "name")) == h.Query }, true
	case h.SourceIP:
		return "client address", "{connection_properties: {source_ip: true}}",
			func(e any) bool { return boolean(get(e, "connection_properties", "source_ip")) }, true
	case h.Cookie != "":
		return "cookie " + strconv.Quote(h.Cookie), "{cookie: {name: " + h.Cookie + "}}",
			func(e any) bool { return str(get(e, "cookie", "name")) == h.Cookie }, true
	}
	return "", "", nil, false
}

// circuitBreakers checks that failover has room for its retries.
func (x *examination) circuitBreakers(where string, cl map[string]any) {
	retries := 3.0 // Envoy's default
	budget := false
	for _, t := range list(get(cl, "circuit_breakers", "thresholds")) {
		if pr := str(get(t, "priority")); pr != "" && pr != "DEFAULT" {
			continue
		}
		if n, ok := number(get(t, "max_retries")); ok {
			retries = n
		}
		budget = budget || get(t, "retry_budget") != nil
	}
	if !budget && retries < minRetries {
		x.r.add(maxRetries.at(where, fmt.Sprintf("circuit_breakers allow %d concurrent retries", int(retries))))
	}
}

// retry checks a route's retry policy: a failed connection is retried on
// another host (the successor), never the one that failed.
func (x *examination) retry(p *affinity.Pool, s *site, rt route) {
	rp := obj(get(rt.r, "route", "retry_policy"))
	if rp == nil {
		rp = obj(rt.vh["retry_policy"])
	}
	where := rt.where(s.listener)
	on := strings.Split(str(rp["retry_on"]), ",")
	if rp == nil || !slices.ContainsFunc(on, func(s string) bool {
		s = strings.TrimSpace(s)
		return s == "connect-failure" || s == "5xx" || s == "gateway-error"
	}) {
		x.r.add(retryOn.at(where, "the route does not retry a failed connection (retry_policy.retry_on without connect-failure)"))
		return
	}
	if n, ok := number(rp["num_retries"]); ok && n < 1 {
		x.r.add(retryCount.at(where, "num_retries is 0"))
	}
	previous := slices.ContainsFunc(list(rp["retry_host_predicate"]), func(p any) bool {
		return str(get(p, "name")) == "envoy.retry_host_predicates.previous_hosts" || typeName(get(p, "typed_config")) == typePreviousHosts
	})
	if !previous {
		x.r.add(retryPreviousHosts.at(where, "retry_policy has no previous_hosts retry_host_predicate"))
	}
	// With an override list a retry takes its next host; native mode has
	// none, and its retries are the fallback hash's fixed picks.
	least, rule := 3.0, retryAttempts
	if p.Mode == affinity.ModeNative {
		least, rule = 10, retryAttemptsNative
	}
	if n, _ := number(rp["host_selection_retry_max_attempts"]); n < least {
		x.r.add(rule.at(where, fmt.Sprintf("host_selection_retry_max_attempts is %d", max(int(n), 1))))
	}
}
