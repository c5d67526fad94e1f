package main

import "testing"

// TestSessionHeader: a line of -cookies is a cookie unless it is a header
// line "Name: value".
func TestSessionHeader(t *testing.T) {
	for _, c := range []struct{ line, name, value string }{
		{"affinity=eyJhbGciOi.eyJzaWQ.sig", "Cookie", "affinity=eyJhbGciOi.eyJzaWQ.sig"},
		{"X-Session-Id: eyJhbGciOi.eyJzaWQ.sig", "X-Session-Id", "eyJhbGciOi.eyJzaWQ.sig"},
		{"a=b; c: d", "Cookie", "a=b; c: d"},
		{"app_session=x: y", "Cookie", "app_session=x: y"},
	} {
		if name, value := sessionHeader(c.line); name != c.name || value != c.value {
			t.Errorf("%q: %s %q, want %s %q", c.line, name, value, c.name, c.value)
		}
	}
}
