package extproc

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// TestDebugLogKeepsSecrets: even at debug level, where every decision is
// logged, no session cookie, authorization header or session key reaches
// the log, neither the request's nor the cookie the service issues.
func TestDebugLogKeepsSecrets(t *testing.T) {
	e, cookie := benchEngineWith(t, "    key_sources: [{type: cookie}, {type: header, name: x-user}]\n")
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := NewServer(e, log)
	secrets := []string{strings.TrimPrefix(cookie, "affinity="), "Bearer s3cret-auth", "alice-session-key"}
	requests := [][]string{
		{"cookie", cookie, "authorization", secrets[1]},
		{"x-user", secrets[2], "authorization", secrets[1]},
		{"cookie", "affinity=garbage-token-value", "authorization", secrets[1]},
	}
	var issued []string
	for _, h := range requests {
		fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{requestHeaders("app", h...), responseHeaders}}
		if err := srv.Process(fs); err != nil {
			t.Fatal(err)
		}
		for _, resp := range fs.sent {
			for _, hv := range resp.GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
				if hv.GetHeader().GetKey() == SetCookieHeader {
					v, _, _ := strings.Cut(string(hv.GetHeader().GetRawValue()), ";")
					issued = append(issued, strings.TrimPrefix(v, "affinity="))
				}
			}
		}
	}
	if n := strings.Count(logs.String(), `"msg":"decision"`); n != len(requests) {
		t.Fatalf("%d decision lines at debug level, want %d:\n%s", n, len(requests), logs.String())
	}
	if len(issued) == 0 {
		t.Fatal("no cookie issued: the test would prove nothing about issued cookies")
	}
	for _, s := range append(append(secrets, "garbage-token-value"), issued...) {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log holds %q:\n%s", s, logs.String())
		}
	}
}
