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
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/extproc"
)

// tokenCarrier is where a verified pool's clients present the token Envoy
// verifies: the session cookie, or, in a pool without one, the upstream
// session header that carries an envelope.
func tokenCarrier(p *affinity.Pool) (header bool, name string) {
	if h := p.TokenHeader(); h != "" {
		return true, h
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
	x.jwtRules(s, f, name)
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

// jwtRules checks that a missing or failed token is not an error.
func (x *examination) jwtRules(s *site, f httpFilter, provider string) {
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

// jwks checks that Envoy can fetch the service's keys and, on a live
// Envoy, that the key set it fetches holds the key that signs.
func (x *examination) jwks(where string, prov map[string]any) {
	var kids []string
	var fetched bool
	switch {
	case get(prov, "local_jwks", "inline_string") != nil:
		kids, fetched = keyIDs([]byte(str(get(prov, "local_jwks", "inline_string")))), true
	case get(prov, "remote_jwks") != nil:
		cluster := str(get(prov, "remote_jwks", "http_uri", "cluster"))
		uri := str(get(prov, "remote_jwks", "http_uri", "uri"))
		cl, ok := x.e.Clusters[cluster]
		if !ok {
			x.r.add(jwksCluster.at(where, fmt.Sprintf("remote_jwks names cluster %q, which Envoy does not have", cluster)))
			return
		}
		u, err := url.Parse(uri)
		if err != nil || u.Path != "/.well-known/jwks.json" {
			x.r.add(jwksPath.at(where, fmt.Sprintf("remote_jwks uri %q is not the service's /.well-known/jwks.json", uri), "${cluster}", cluster))
			return
		}
		if x.e.Live && x.client != nil {
			kids, fetched = x.fetchJWKS(cl, cluster, u)
		}
	}
	if !fetched || x.svc.Keys == nil {
		return
	}
	signer := x.svc.Keys.Signer(x.svc.Now)
	if !slices.Contains(kids, signer.ID) {
		x.r.add(jwksKey.at(where, fmt.Sprintf("the key set Envoy reads holds key ids %v, not %q, which signs the service's tokens", kids, signer.ID)))
	}
}

// fetchJWKS reads the key ids the cluster serves at the JWKS path, from its
// first healthy member, as Envoy fetches them.
func (x *examination) fetchJWKS(cl map[string]any, cluster string, u *url.URL) ([]string, bool) {
	var addr string
	for _, m := range x.e.Members[cluster] {
		if m.Healthy {
			addr = m.Address
			break
		}
	}
	if addr == "" {
		return nil, false
	}
	scheme := "http"
	client := x.client
	if get(cl, "transport_socket") != nil {
		scheme = "https"
		// Only the key ids are read, to compare them: whom the cluster
		// trusts is Envoy's configuration, not the doctor's.
		client = &http.Client{Timeout: x.client.Timeout, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname()}}} // #nosec G402
	}
	req, err := http.NewRequestWithContext(x.ctx, http.MethodGet, scheme+"://"+addr+u.RequestURI(), nil)
	if err != nil {
		return nil, false
	}
	req.Host = u.Host
	resp, err := client.Do(req)
	if err != nil {
		x.r.add(jwksFetch.at(fmt.Sprintf("cluster %q", cluster), fmt.Sprintf("fetching %s from %s failed: %v", u.Path, addr, err)))
		return nil, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		x.r.add(jwksFetch.at(fmt.Sprintf("cluster %q", cluster), fmt.Sprintf("%s from %s answered %s", u.Path, addr, resp.Status)))
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
