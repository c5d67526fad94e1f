package doctor

import (
	"strconv"
	"strings"
	"time"
)

// Envoy's configuration is read as a generic tree (JSON objects and YAML
// mappings alike): the doctor needs a few dozen fields, and extensions it
// does not know must not stop it. These helpers read the tree without
// panicking on a missing or mistyped field.

// get walks keys through nested objects; nil when any step is missing.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// obj is v as an object, or nil.
func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// list is v as a list, or nil.
func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// str is v as a string ("" when it is not one).
func str(v any) string {
	s, _ := v.(string)
	return s
}

// strs is a list of strings (other entries are left out).
func strs(v any) []string {
	var out []string
	for _, e := range list(v) {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// boolean is v as a boolean: true, or a BoolValue wrapper {value: true}.
func boolean(v any) bool {
	switch b := v.(type) {
	case bool:
		return b
	case map[string]any:
		return boolean(b["value"])
	}
	return false
}

// number is v as a number: JSON numbers, YAML integers, numeric strings
// (64-bit values in proto JSON) and UInt32Value wrappers {value: n}.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case string:
		f, err := strconv.ParseFloat(n, 64)
		return f, err == nil
	case map[string]any:
		return number(n["value"])
	}
	return 0, false
}

// duration is a proto Duration as JSON ("0.200s") or YAML ("0.2s", or
// {seconds, nanos}).
func duration(v any) (time.Duration, bool) {
	switch d := v.(type) {
	case string:
		out, err := time.ParseDuration(d)
		return out, err == nil
	case map[string]any:
		s, _ := number(d["seconds"])
		n, _ := number(d["nanos"])
		return time.Duration(s)*time.Second + time.Duration(n), true
	}
	return 0, false
}

// typeName is the message type of an Any ("@type" without its prefix).
func typeName(v any) string {
	t := str(get(v, "@type"))
	if i := strings.LastIndexByte(t, '/'); i >= 0 {
		t = t[i+1:]
	}
	return t
}

// Message types the doctor reads.
const (
	typeHCM             = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	typeExtProc         = "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
	typeExtProcPerRoute = "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
	typeWithMatcher     = "envoy.extensions.common.matching.v3.ExtensionWithMatcher"
	typeJwtAuthn        = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
	typeStatefulSession = "envoy.extensions.filters.http.stateful_session.v3.StatefulSession"
	typeSessionPerRoute = "envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute"
	typeHeaderSession   = "envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState"
	typeCookieSession   = "envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState"
	typeRouter          = "envoy.extensions.filters.http.router.v3.Router"
	typeFilterConfig    = "envoy.config.route.v3.FilterConfig"
	typeOverrideHost    = "envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost"
	typePreviousHosts   = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
	typeHTTPOptions     = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	typeHeaderMutation  = "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation"
)
