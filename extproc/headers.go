// Reading and writing Envoy's headers and attributes, for both phases.

package extproc

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// headerList reads the request's headers for the key sources.
type headerList []*corev3.HeaderValue

// Get returns the first value of the named header (name in lower case).
func (l headerList) Get(name string) (string, bool) {
	for _, hv := range l {
		if strings.EqualFold(hv.GetKey(), name) {
			return headerValue(hv), true
		}
	}
	return "", false
}

// headerValue prefers raw_value, where Envoy puts header values.
func headerValue(h *corev3.HeaderValue) string {
	if len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

// attribute returns a string request attribute Envoy sent, or "".
func attribute(req *extprocv3.ProcessingRequest, name string) string {
	attrs, ok := req.GetAttributes()[AttributesKey]
	if !ok {
		return ""
	}
	return attrs.GetFields()[name].GetStringValue()
}

// setHeader sets a request header, replacing every copy the request has:
// append left unset is false, which Envoy applies as replace-all.
func setHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, RawValue: []byte(value)}}
}

// setCookie appends a Set-Cookie header: append, or the application's own
// Set-Cookie would be replaced.
func setCookie(v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: SetCookieHeader, RawValue: []byte(v)},
		// The deprecated append field on purpose: ext_proc ignores
		// append_action and honours only this one.
		Append: wrapperspb.Bool(true),
	}
}
