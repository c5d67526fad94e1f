package doctor

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

const retryMeasured = "measured: a backend killed under load (90 sessions, a request each per 20 ms) gave 5,233 failed requests of 24,587 with Envoy's default, 0 with max_retries: 1024"

// cluster checks a pool's cluster: its load-balancing policy, circuit
// breakers, and the retry policy of the routes to it.
func (c *checker) cluster(p *affinity.Pool, name string, sites []*site, payload string) {
	cl := c.e.Clusters[name]
	where := fmt.Sprintf("cluster %q", name)
	if cl == nil {
		c.r.add(Problem{Severity: Error, Check: "cluster.missing", Where: where,
			Problem: "routes name the cluster, but Envoy does not have it",
			Breaks:  "requests to it fail", Fix: "add the cluster"})
		return
	}
	var routes []route
	for _, s := range sites {
		for _, rt := range s.routes {
			if slices.Contains(rt.clusters(), name) {
				routes = append(routes, rt)
				c.retry(p, s, rt)
			}
		}
	}
	if p.Output.StatefulSession == "" {
		c.overrideHost(p, where, cl, payload, routes)
	}
	c.circuitBreakers(where, cl)
}

// overrideHost checks the cluster's override_host policy.
func (c *checker) overrideHost(p *affinity.Pool, where string, cl map[string]any, payload string, routes []route) {
	var oh map[string]any
	for _, pol := range list(get(cl, "load_balancing_policy", "policies")) {
		if tc := obj(get(pol, "typed_extension_config", "typed_config")); typeName(tc) == typeOverrideHost {
			oh = tc
		}
		break // Envoy uses the first policy it supports: the first listed
	}
	if oh == nil {
		c.r.add(Problem{Severity: Error, Check: "override_host.policy", Where: where,
			Problem: "the cluster's load-balancing policy is not envoy.load_balancing_policies.override_host",
			Breaks:  "Envoy ignores the service's decision and each verified token: requests go where the cluster's load balancer sends them, sessions are not kept",
			Fix:     "load_balancing_policy: {policies: [{typed_extension_config: {name: envoy.load_balancing_policies.override_host, ...}}]} with your current policy as its fallback_policy (" + fixGenerated + ")"})
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
		c.r.add(Problem{Severity: Error, Check: "override_host.sources", Where: where,
			Problem: "override_host_sources does not read the service's decision " + want,
			Breaks:  "Envoy ignores the service's decision: new and re-bound sessions go where the fallback policy sends them",
			Fix:     "override_host_sources: [" + want + "]"})
	}
	if p.Mode == affinity.ModeVerified {
		key := orDefault(payload, "affinity")
		jwtSource := find(func(s any) bool { return metaIs(get(s, "metadata"), extproc.JWTFilterName, key, affinity.HostClaim) })
		switch {
		case jwtSource < 0:
			c.r.add(Problem{Severity: Error, Check: "override_host.sources", Where: where,
				Problem: fmt.Sprintf("override_host_sources does not read the verified token's claim h {metadata: {key: %s, path: [{key: %s}, {key: %s}]}}", extproc.JWTFilterName, key, affinity.HostClaim),
				Breaks:  "established sessions, which Envoy routes without the service, go where the fallback policy sends them: sessions are not kept",
				Fix:     fmt.Sprintf("override_host_sources: [{metadata: {key: %s, path: [{key: %s}, {key: %s}]}}, {metadata: {key: envoy.lb, path: [{key: x-gateway-destination-endpoint}]}}]", extproc.JWTFilterName, key, affinity.HostClaim)})
		case decision >= 0 && decision < jwtSource:
			c.r.add(Problem{Severity: Warning, Check: "override_host.sources", Where: where,
				Problem: "the service's decision is read before the verified token's claim h",
				Breaks:  "differs from the tested order (the token first, then the decision)",
				Fix:     "list the jwt_authn source first"})
		}
	}
	if rebinds(p) && !metaIs(oh["selected_host_key"], extproc.MetadataNamespace, extproc.ServedKey) {
		c.r.add(Problem{Severity: Error, Check: "override_host.selected_host_key", Where: where,
			Problem: fmt.Sprintf("selected_host_key is not {key: %s, path: [{key: %s}]}", extproc.MetadataNamespace, extproc.ServedKey),
			Breaks:  "the service never learns which host served: " + rebindBreaks,
			Fix:     fmt.Sprintf("selected_host_key: {key: %s, path: [{key: %s}]}", extproc.MetadataNamespace, extproc.ServedKey)})
	}
	var fb map[string]any
	if pols := list(get(oh, "fallback_policy", "policies")); len(pols) > 0 {
		fb = obj(get(pols[0], "typed_extension_config", "typed_config"))
	}
	// What keeps a session on one host while the service is away: a hash
	// of the session cookie, or of the session header when the pool keys
	// by one and has no cookie.
	want, hashes := "cookie "+strconv.Quote(p.Cookie.Name), func(h any) bool { return str(get(h, "cookie", "name")) == p.Cookie.Name }
	policy := "{cookie: {name: " + p.Cookie.Name + "}}"
	if _, cookie := sourceOf(p, affinity.SourceCookie); !cookie {
		ks, ok := sourceOf(p, affinity.SourceUpstreamHeader)
		if !ok {
			ks, ok = sourceOf(p, affinity.SourceHeader)
		}
		if !ok {
			return // nothing a hash could keep
		}
		want, hashes = "header "+strconv.Quote(ks.Name), func(h any) bool { return strings.EqualFold(str(get(h, "header", "header_name")), ks.Name) }
		policy = "{header: {header_name: " + ks.Name + "}}"
	}
	cookieHash := func(policies any) bool { return slices.ContainsFunc(list(policies), hashes) }
	hashesCookie := cookieHash(get(fb, "consistent_hashing_lb_config", "hash_policy"))
	if t := typeName(fb); get(fb, "consistent_hashing_lb_config", "hash_policy") == nil &&
		(strings.HasSuffix(t, ".Maglev") || strings.HasSuffix(t, ".RingHash")) {
		// Without its own hash policy the fallback hashes by the route's.
		hashesCookie = len(routes) > 0
		for _, rt := range routes {
			hashesCookie = hashesCookie && cookieHash(get(rt.r, "route", "hash_policy"))
		}
	}
	if !hashesCookie {
		c.r.add(Problem{Severity: Warning, Check: "override_host.fallback_policy", Where: where,
			Problem: fmt.Sprintf("the fallback policy does not hash the session's %s (Maglev or ring hash with a hash_policy on it)", want),
			Breaks:  "while the service is unreachable, requests without a verified token scatter over the hosts instead of each session keeping one",
			Fix:     fmt.Sprintf("fallback_policy: {policies: [{typed_extension_config: {name: envoy.load_balancing_policies.maglev, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev, consistent_hashing_lb_config: {hash_policy: [%s]}}}}]}", policy)})
	}
}

// sourceOf is the pool's key source of a type.
func sourceOf(p *affinity.Pool, t affinity.KeySource) (affinity.KeySourceSpec, bool) {
	for _, ks := range p.KeySources {
		if ks.Type == t {
			return ks, true
		}
	}
	return affinity.KeySourceSpec{}, false
}

// circuitBreakers checks that failover has room for its retries.
func (c *checker) circuitBreakers(where string, cl map[string]any) {
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
		c.r.add(Problem{Severity: Error, Check: "cluster.max_retries", Where: where,
			Problem: fmt.Sprintf("circuit_breakers allow %d concurrent retries", int(retries)),
			Breaks:  "when a host dies, its sessions' requests are retried on their successors at once and those past the limit fail with 503 (" + retryMeasured + ")",
			Fix:     "circuit_breakers: {thresholds: [{max_retries: 1024}]}"})
	}
}

// retry checks a route's retry policy: a failed connection is retried on
// another host (the successor), never the one that failed.
func (c *checker) retry(p *affinity.Pool, s *site, rt route) {
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
		c.r.add(Problem{Severity: Error, Check: "route.retry_policy", Where: where,
			Problem: "the route does not retry a failed connection (retry_policy.retry_on without connect-failure)",
			Breaks:  "requests of a host that just died fail with 503 until the service moves its sessions",
			Fix:     "retry_policy: {retry_on: connect-failure,refused-stream,reset, num_retries: 2, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}], host_selection_retry_max_attempts: 10}"})
		return
	}
	if n, ok := number(rp["num_retries"]); ok && n < 1 {
		c.r.add(Problem{Severity: Error, Check: "route.retry_policy", Where: where,
			Problem: "num_retries is 0", Breaks: "requests of a host that just died fail with 503", Fix: "num_retries: 2"})
	}
	previous := slices.ContainsFunc(list(rp["retry_host_predicate"]), func(p any) bool {
		return str(get(p, "name")) == "envoy.retry_host_predicates.previous_hosts" || typeName(get(p, "typed_config")) == typePreviousHosts
	})
	if !previous {
		c.r.add(Problem{Severity: Error, Check: "route.retry_policy", Where: where,
			Problem: "retry_policy has no previous_hosts retry_host_predicate",
			Breaks:  "override_host sends the retry back to the host that just failed instead of the successor: the request fails",
			Fix:     "retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]"})
	}
	// With an override list a retry takes its next host; native mode has
	// none, and its retries are the fallback hash's fixed picks.
	least := 3.0
	breaks := "a retry's host selection gives up early and may land on the host that failed"
	if p.Mode == affinity.ModeNative {
		least = 10
		breaks = "native mode retries by the fallback's hash, which gives each session a fixed order of picks: with 3 hosts and 5 attempts, 1 session in 243 draws the failed host every time and its request fails"
	}
	if n, _ := number(rp["host_selection_retry_max_attempts"]); n < least {
		c.r.add(Problem{Severity: Warning, Check: "route.retry_policy", Where: where,
			Problem: fmt.Sprintf("host_selection_retry_max_attempts is %d", max(int(n), 1)),
			Breaks:  breaks,
			Fix:     "host_selection_retry_max_attempts: 10"})
	}
}

// hosts compares a pool's hosts with the Envoy cluster's members.
func (c *checker) hosts(p *affinity.Pool, cluster string) {
	members, known := c.e.Members[cluster]
	if !known || (p.Source != nil && p.Source.Kind == affinity.SourceEnvoy) {
		return // unknown, or the pool reads them from Envoy itself
	}
	if p.Source != nil && len(p.Specs) == 0 {
		return // a DNS pool not yet resolved
	}
	where := fmt.Sprintf("pool %s, cluster %q", p.Name, cluster)
	byAddr := map[string]Member{}
	for _, m := range members {
		byAddr[m.Address] = m
	}
	inPool := map[string]bool{}
	for _, h := range p.Specs {
		inPool[h.Address] = true
		m, ok := byAddr[h.Address]
		switch {
		case !ok:
			c.r.add(Problem{Severity: Error, Check: "hosts.missing", Where: where,
				Problem: fmt.Sprintf("the pool's host %s is not a member of Envoy's cluster", h.Address),
				Breaks:  "sessions the service places there cannot be routed there: each of their requests goes to the successor or the fallback policy",
				Fix:     "make the pool's hosts Envoy's members (or read them from Envoy: discovery.envoy)"})
		case m.Hostname != "" && h.Name != "" && m.Hostname != h.Name:
			c.r.add(Problem{Severity: Warning, Check: "hosts.name", Where: where,
				Problem: fmt.Sprintf("host %s is %q in the pool, %q in Envoy", h.Address, h.Name, m.Hostname),
				Breaks:  "logs, metrics and the successor header name the host differently from Envoy's",
				Fix:     fmt.Sprintf("name: %s", m.Hostname)})
		}
	}
	for _, m := range members {
		if !inPool[m.Address] {
			c.r.add(Problem{Severity: Warning, Check: "hosts.extra", Where: where,
				Problem: fmt.Sprintf("Envoy's member %s is not one of the pool's hosts", m.Address),
				Breaks:  "the service never places a session there; only Envoy's fallback policy sends it requests",
				Fix:     "add it to the pool's hosts, or read the hosts from Envoy (discovery.envoy)"})
		}
	}
}

// jwks checks that Envoy can fetch the service's keys and, on a live
// Envoy, that the key set it fetches holds the key that signs.
func (c *checker) jwks(where string, prov map[string]any) {
	var kids []string
	var fetched bool
	switch {
	case get(prov, "local_jwks", "inline_string") != nil:
		kids, fetched = keyIDs([]byte(str(get(prov, "local_jwks", "inline_string")))), true
	case get(prov, "remote_jwks") != nil:
		cluster := str(get(prov, "remote_jwks", "http_uri", "cluster"))
		uri := str(get(prov, "remote_jwks", "http_uri", "uri"))
		cl, ok := c.e.Clusters[cluster]
		if !ok {
			c.r.add(Problem{Severity: Error, Check: "jwt_authn.jwks", Where: where,
				Problem: fmt.Sprintf("remote_jwks names cluster %q, which Envoy does not have", cluster),
				Breaks:  "Envoy cannot fetch the service's keys and refuses every token: every request goes to the service",
				Fix:     "add a cluster reaching the service's admin listener (-admin-addr) and name it in remote_jwks.http_uri.cluster"})
			return
		}
		u, err := url.Parse(uri)
		if err != nil || u.Path != "/.well-known/jwks.json" {
			c.r.add(Problem{Severity: Error, Check: "jwt_authn.jwks", Where: where,
				Problem: fmt.Sprintf("remote_jwks uri %q is not the service's /.well-known/jwks.json", uri),
				Breaks:  "Envoy fetches no keys and refuses every token: every request goes to the service",
				Fix:     "remote_jwks: {http_uri: {uri: http://<service admin address>/.well-known/jwks.json, cluster: " + cluster + ", timeout: 1s}}"})
			return
		}
		if c.e.Live && c.client != nil {
			kids, fetched = c.fetchJWKS(cl, cluster, u)
		}
	}
	if !fetched || c.svc.Keys == nil {
		return
	}
	signer := c.svc.Keys.Signer(c.svc.Now)
	if !slices.Contains(kids, signer.ID) {
		c.r.add(Problem{Severity: Error, Check: "jwt_authn.jwks", Where: where,
			Problem: fmt.Sprintf("the key set Envoy reads holds key ids %v, not %q, which signs the service's tokens", kids, signer.ID),
			Breaks:  "Envoy refuses every token the service signs: every request goes to the service",
			Fix:     "point remote_jwks at this service's admin listener (the same keys file on every replica)"})
	}
}

// fetchJWKS reads the key ids the cluster serves at the JWKS path, from its
// first healthy member, as Envoy fetches them.
func (c *checker) fetchJWKS(cl map[string]any, cluster string, u *url.URL) ([]string, bool) {
	var addr string
	for _, m := range c.e.Members[cluster] {
		if m.Healthy {
			addr = m.Address
			break
		}
	}
	if addr == "" {
		return nil, false
	}
	scheme := "http"
	client := c.client
	if get(cl, "transport_socket") != nil {
		scheme = "https"
		// Only the key ids are read, to compare them: whom the cluster
		// trusts is Envoy's configuration, not the doctor's.
		client = &http.Client{Timeout: c.client.Timeout, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname()}}} // #nosec G402
	}
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, scheme+"://"+addr+u.RequestURI(), nil)
	if err != nil {
		return nil, false
	}
	req.Host = u.Host
	resp, err := client.Do(req)
	if err != nil {
		c.r.add(Problem{Severity: Error, Check: "jwt_authn.jwks", Where: fmt.Sprintf("cluster %q", cluster),
			Problem: fmt.Sprintf("fetching %s from %s failed: %v", u.Path, addr, err),
			Breaks:  "Envoy cannot fetch the service's keys and refuses every token: every request goes to the service",
			Fix:     "point the cluster at the service's admin listener (-admin-addr)"})
		return nil, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		c.r.add(Problem{Severity: Error, Check: "jwt_authn.jwks", Where: fmt.Sprintf("cluster %q", cluster),
			Problem: fmt.Sprintf("%s from %s answered %s", u.Path, addr, resp.Status),
			Breaks:  "Envoy cannot fetch the service's keys and refuses every token: every request goes to the service",
			Fix:     "point the cluster at the service's admin listener (-admin-addr)"})
		return nil, false
	}
	return keyIDs(body), true
}

// keyIDs lists the kid of each key of a JWKS.
func keyIDs(data []byte) []string {
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if json.Unmarshal(data, &set) != nil {
		return nil
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.Kid)
	}
	return out
}
