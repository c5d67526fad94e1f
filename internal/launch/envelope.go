package launch

import (
	"fmt"
	"strings"
)

// SessionHeaderChanges are the edits that turn envoy/verified.yaml into the
// verified mode for a session header the upstream starts, in a signed
// envelope (key source upstream_header, envelope: signed), for the pool
// audience: jwt_authn reads the envelope from the header; the established
// route puts the upstream's own value (the verified claim sid, from
// jwt_authn's metadata) back into the header and drops a repeat of the
// header from the response; the fallback hashes the header. Each pair is
// (text of verified.yaml, its replacement); examples/mcp/envoy.yaml is
// verified.yaml with these for mcp-session-id.
func SessionHeaderChanges(header, audience string) [][2]string {
	return [][2]string{
		{"                      - cookie: {name: affinity}", "                      - header: {header_name: " + header + "}"},
		{"                  from_cookies: [affinity]\n",
			"                  # The envelope comes in the session header itself.\n                  from_headers: [{name: " + header + "}]\n"},
		{"                  audiences: [default]\n                  max_lifetime: 302s\n",
			"                  audiences: [" + audience + "]\n" +
				"                  # An envelope lives as long as its session may\n" +
				"                  # (pools[].session.absolute_timeout, 24h, plus rounding).\n" +
				"                  max_lifetime: 86402s\n"},
		{"                request_headers_to_remove: [x-session-rebound, x-session-successor]\n",
			"                request_headers_to_remove: [x-session-rebound, x-session-successor]\n" +
				"                # The server gets its own session id back (the verified\n" +
				"                # envelope's claim sid), not the envelope.\n" +
				"                request_headers_to_add:\n" +
				"                - header: {key: " + header + ", value: \"%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:affinity:sid)%\"}\n" +
				"                  append_action: OVERWRITE_IF_EXISTS_OR_ADD\n" +
				"                # A server that repeats the id would hand the client the bare\n" +
				"                # value: the client keeps its envelope.\n" +
				"                response_headers_to_remove: [" + header + "]\n"},
	}
}

// ApplyChanges makes each change of text once; a change whose text is not
// there exactly once is an error (the file it was written for changed).
func ApplyChanges(text string, changes [][2]string) (string, error) {
	for _, c := range changes {
		if n := strings.Count(text, c[0]); n != 1 {
			return "", fmt.Errorf("%q is there %d times, want once", c[0], n)
		}
		text = strings.Replace(text, c[0], c[1], 1)
	}
	return text, nil
}
