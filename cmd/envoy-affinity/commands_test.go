package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckDescribesKeySources: check names each key source of a pool and
// what its requests cost in the pool's mode, and says when a verified pool
// has nothing for Envoy to verify.
func TestCheckDescribesKeySources(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	tests := []struct {
		name, pool string
		want, not  []string
	}{
		{"header, verified", "mode: verified\n    key_sources: [{type: header, name: X-Session-Id}]",
			[]string{"pool default: mode verified, 1 host\n", "  header x-session-id: the service decides every request (1 ext_proc message)\n",
				"  note: mode verified has Envoy verify session tokens, and this pool's sessions carry none", "set mode: opaque to say so"},
			[]string{"cookie affinity"}},
		{"header, opaque", "mode: opaque\n    key_sources: [{type: header, name: x-session-id}]",
			[]string{"  header x-session-id: the service decides every request (1 ext_proc message)\n"}, []string{"note:", "cookie"}},
		{"cookie, opaque", "mode: opaque",
			[]string{"  cookie affinity: the service decides every request (new session 2 ext_proc messages, established 1), 2 at each refresh (every 5m0s)\n"}, nil},
		{"native", "mode: native\n    cookie: {name: sid}",
			[]string{"  cookie sid: new session 1 ext_proc message, established sessions 0 (Envoy routes them alone)\n"}, []string{"refresh"}},
		{"header before the cookie, verified", "key_sources: [{type: header, name: x-device}, {type: cookie}]\n    session: {refresh_interval: 90s}",
			[]string{"  header x-device: the service decides every request (1 ext_proc message)\n  cookie affinity: new session 2 ext_proc messages, established sessions 0 (Envoy routes them alone), 2 at each refresh (every 1m30s)\n"},
			[]string{"note:"}},
		{"query, client address and a learned cookie", "mode: opaque\n    key_sources: [{type: query, name: sid}, {type: client_address}, {type: app_cookie, name: JSESSIONID}]",
			[]string{"  query parameter sid: the service decides every request (2 ext_proc messages: its response too, for a key to learn or wrap)\n",
				"  client address: the service decides every request (2 ext_proc messages: its response too, for a key to learn or wrap)\n",
				"  application cookie JSESSIONID (learned): the service decides every request (new session 2 ext_proc messages, established 1)\n"}, nil},
		{"envelope, verified", "key_sources: [{type: upstream_header, name: Mcp-Session-Id, envelope: signed}]",
			[]string{"  upstream header mcp-session-id (signed envelope): new session 2 ext_proc messages, established sessions 0 (Envoy routes them alone)\n"}, []string{"note:"}},
		{"learned header, verified", "key_sources: [{type: upstream_header, name: Mcp-Session-Id}]",
			[]string{"  upstream header mcp-session-id (learned): the service decides every request (new session 2 ext_proc messages, established 1)\n", "note:"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.NewReplacer(" ", "-", ",", "").Replace(tt.name)+".yaml")
			writeFile(t, path, "keys: {file: keys.txt}\npools:\n  - hosts: [{address: '127.0.0.1:8081'}]\n    "+tt.pool+"\n")
			var out bytes.Buffer
			if err := Run(context.Background(), []string{"check", "-config", path}, &out, &out); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out.String(), n) {
					t.Errorf("output has %q", n)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out.String())
			}
		})
	}
}
