package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"gopkg.in/yaml.v3"
)

// A verified-mode Envoy does several things for an established session; the
// parts benchmark takes them away one at a time, from the last in the
// request's path to the first, so each step's difference is what one part
// costs. Every variant is still sent established sessions only.

// part names one thing taken away, and how.
type part struct {
	name   string
	remove func(y map[string]any) error
}

var verifiedParts = []part{
	{"override_host (the cluster balances round robin)", func(y map[string]any) error {
		c, err := cluster(y, "app")
		delete(c, "load_balancing_policy")
		return err
	}},
	{"the stateful_session failover marker", func(y map[string]any) error {
		return removeFilter(y, "envoy.filters.http.stateful_session")
	}},
	{"the ext_proc filter (in its matcher)", func(y map[string]any) error {
		return removeFilter(y, "envoy.filters.http.ext_proc")
	}},
	{"clear_route_cache and the second route", func(y map[string]any) error {
		p, err := provider(y)
		if err != nil {
			return err
		}
		p["clear_route_cache"] = false
		vh, err := node(y, hcmPath("route_config", "virtual_hosts", 0)...)
		if err != nil {
			return err
		}
		routes, _ := vh["routes"].([]any)
		decide := slices.IndexFunc(routes, func(r any) bool { return r.(map[string]any)["name"] == "decide" })
		if decide < 0 {
			return fmt.Errorf("no route decide")
		}
		vh["routes"] = routes[decide:]
		return nil
	}},
	{"claim_to_headers and the early header removal", func(y map[string]any) error {
		p, err := provider(y)
		delete(p, "claim_to_headers")
		h, err2 := node(y, hcmPath()...)
		delete(h, "early_header_mutation_extensions")
		return cmpErr(err, err2)
	}},
	{"payload_in_metadata (jwt_authn alone is left)", func(y map[string]any) error {
		p, err := provider(y)
		delete(p, "payload_in_metadata")
		return err
	}},
}

func cmpErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// hcmPath is the path of the first listener's HTTP connection manager, then more.
func hcmPath(more ...any) []any {
	return append([]any{"static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config"}, more...)
}

// node walks keys and list indexes to a mapping.
func node(v any, path ...any) (map[string]any, error) {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil, fmt.Errorf("no entry %d at %v", k, path)
			}
			v = l[k]
		}
		if v == nil {
			return nil, fmt.Errorf("no %v in the YAML", path)
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%v is not a mapping", path)
	}
	return m, nil
}

func cluster(y map[string]any, name string) (map[string]any, error) {
	s, err := node(y, "static_resources")
	if err != nil {
		return nil, err
	}
	for _, c := range s["clusters"].([]any) {
		if m := c.(map[string]any); m["name"] == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no cluster %s", name)
}

func provider(y map[string]any) (map[string]any, error) {
	h, err := node(y, hcmPath()...)
	if err != nil {
		return nil, err
	}
	for _, f := range h["http_filters"].([]any) {
		if m := f.(map[string]any); m["name"] == "envoy.filters.http.jwt_authn" {
			return node(m, "typed_config", "providers", "affinity")
		}
	}
	return nil, fmt.Errorf("no jwt_authn filter")
}

// removeFilter takes an HTTP filter out, with its per-route configurations.
func removeFilter(y map[string]any, name string) error {
	h, err := node(y, hcmPath()...)
	if err != nil {
		return err
	}
	filters := h["http_filters"].([]any)
	i := slices.IndexFunc(filters, func(f any) bool { return f.(map[string]any)["name"] == name })
	if i < 0 {
		return fmt.Errorf("no http filter %s", name)
	}
	h["http_filters"] = slices.Delete(filters, i, i+1)
	vh, err := node(y, hcmPath("route_config", "virtual_hosts", 0)...)
	if err != nil {
		return err
	}
	for _, r := range vh["routes"].([]any) {
		if per, ok := r.(map[string]any)["typed_per_filter_config"].(map[string]any); ok {
			delete(per, name)
		}
	}
	return nil
}

// partsConfigs writes verified.yaml with its parts taken away cumulatively
// and returns the configurations to measure: verified whole, then one part
// fewer at each step. Sessions are established through verified.yaml
// itself (the stripped Envoys issue no cookie).
func partsConfigs(root, dir string) ([]config, error) {
	src := filepath.Join(root, "envoy", "verified.yaml")
	data, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	var y map[string]any
	if err := yaml.Unmarshal(data, &y); err != nil {
		return nil, err
	}
	configs := []config{{name: "verified", mode: "verified"}}
	for i, p := range verifiedParts {
		if err := p.remove(y); err != nil {
			return nil, fmt.Errorf("taking away %s: %w", p.name, err)
		}
		out, err := yaml.Marshal(y)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, fmt.Sprintf("verified-part-%d.yaml", i+1))
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return nil, err
		}
		configs = append(configs, config{name: "− " + p.name, mode: "verified", yaml: path, establish: src})
	}
	return configs, nil
}

// oneRouteVariant writes verified.yaml changed to skip the ext_proc
// without choosing the route again: one route, no clear_route_cache; the
// deciding ext_proc in a matcher that skips it when the request carries a
// verified token's primary (jwt_authn's claim_to_headers), and the existing
// response-only ext_proc in a matcher that runs it only for a response the
// stateful_session filter marked. The established route's header removal
// moves to the connection manager's early removal.
func oneRouteVariant(root, dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, "envoy", "verified.yaml"))
	if err != nil {
		return "", err
	}
	var y map[string]any
	if err := yaml.Unmarshal(data, &y); err != nil {
		return "", err
	}
	p, err := provider(y)
	if err != nil {
		return "", err
	}
	p["clear_route_cache"] = false
	vh, err := node(y, hcmPath("route_config", "virtual_hosts", 0)...)
	if err != nil {
		return "", err
	}
	var decide, established map[string]any
	for _, r := range vh["routes"].([]any) {
		switch m := r.(map[string]any); m["name"] {
		case "decide":
			decide = m
		case "established":
			established = m
		}
	}
	if decide == nil || established == nil {
		return "", fmt.Errorf("verified.yaml: no routes established and decide")
	}
	delete(decide, "typed_per_filter_config")
	vh["routes"] = []any{decide}
	h, err := node(y, hcmPath()...)
	if err != nil {
		return "", err
	}
	mutation, err := node(h, "early_header_mutation_extensions", 0, "typed_config")
	if err != nil {
		return "", err
	}
	for _, name := range established["request_headers_to_remove"].([]any) {
		mutation["mutations"] = append(mutation["mutations"].([]any), map[string]any{"remove": name})
	}
	// The deciding filter becomes the one failover filter (the keyed
	// sessions' own goes).
	filters := slices.DeleteFunc(h["http_filters"].([]any), func(f any) bool { return f.(map[string]any)["name"] == "affinity-failover" })
	i := slices.IndexFunc(filters, func(f any) bool { return f.(map[string]any)["name"] == "envoy.filters.http.ext_proc" })
	if i < 0 {
		return "", fmt.Errorf("verified.yaml: no ext_proc filter")
	}
	failover := filters[i].(map[string]any)
	failover["name"] = "affinity-failover"
	proc, err := node(failover, "typed_config", "extension_config", "typed_config")
	if err != nil {
		return "", err
	}
	// The failover filter: runs only for a marked response.
	markInput := map[string]any{"name": "failover-mark", "typed_config": map[string]any{
		"@type":       "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
		"header_name": "x-affinity-primary"}}
	failover["typed_config"].(map[string]any)["xds_matcher"] = skipUnless(false, markInput)
	// The deciding filter: skipped for a verified token.
	decider := map[string]any{}
	for k, v := range proc {
		decider[k] = v
	}
	decider["processing_mode"] = map[string]any{"request_header_mode": "SEND", "response_header_mode": "SEND",
		"request_body_mode": "NONE", "response_body_mode": "NONE", "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
	delete(decider, "response_attributes")
	tokenInput := map[string]any{"name": "established", "typed_config": map[string]any{
		"@type":       "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
		"header_name": "x-affinity-primary"}}
	deciding := map[string]any{"name": "affinity-decide", "typed_config": map[string]any{
		"@type":            "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
		"extension_config": map[string]any{"name": "envoy.filters.http.ext_proc", "typed_config": decider},
		"xds_matcher":      skipUnless(true, tokenInput),
	}}
	h["http_filters"] = slices.Insert(filters, i, any(deciding))
	out, err := yaml.Marshal(y)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "verified-one-route.yaml")
	return path, os.WriteFile(path, out, 0o600)
}

// skipUnless is a matcher whose action skips the filter when the header
// input is present (skipIfPresent) or absent.
func skipUnless(skipIfPresent bool, input map[string]any) map[string]any {
	predicate := map[string]any{"single_predicate": map[string]any{"input": input,
		"value_match": map[string]any{"safe_regex": map[string]any{"google_re2": map[string]any{}, "regex": ".*"}}}}
	if !skipIfPresent {
		predicate = map[string]any{"not_matcher": predicate}
	}
	return map[string]any{"matcher_list": map[string]any{"matchers": []any{map[string]any{
		"predicate": predicate,
		"on_match": map[string]any{"action": map[string]any{"name": "skip", "typed_config": map[string]any{
			"@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}}},
	}}}}
}
