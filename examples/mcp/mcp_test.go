package mcp_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"github.com/envoy-affinity/envoy-affinity/internal/launchtest"
)

// bins runs the MCP server of ./server as the stack's backends.
var bins launch.Binaries

func TestMain(m *testing.M) {
	os.Exit(launchtest.Main(m, &bins, func(dir string, bins *launch.Binaries) error {
		bins.Backend = filepath.Join(dir, "mcp-server")
		if out, err := exec.Command("go", "build", "-o", bins.Backend, "./server").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./server: %v\n%s", err, out)
		}
		return nil
	}))
}

// recipe is one way to run the gateway: an Envoy YAML of this folder, the
// pool's mode and its key source as the stack writes the pool (with
// config.yaml's bounded loads).
type recipe struct {
	name, yaml, mode string
	source           launch.KeySource
	// envelope: the client holds a signed envelope, not the server's id.
	envelope bool
}

var (
	// verifiedEnvelope is the recipe as shipped: envoy.yaml and config.yaml.
	verifiedEnvelope = recipe{"verified, envelope", "envoy.yaml", "verified", launch.KeySource{Type: "upstream_header", Name: "mcp-session-id", Envelope: "signed"}, true}
	opaqueLearned    = recipe{"opaque, learned", "envoy-opaque.yaml", "opaque", launch.KeySource{Type: "upstream_header", Name: "mcp-session-id"}, false}
	opaqueEnvelope   = recipe{"opaque, envelope", "envoy-opaque.yaml", "opaque", launch.KeySource{Type: "upstream_header", Name: "mcp-session-id", Envelope: "signed"}, true}
	recipes          = []recipe{verifiedEnvelope, opaqueLearned, opaqueEnvelope}
)

// newStack runs Envoy (the recipe's YAML), the service and three MCP
// servers; in the verified mode it waits until Envoy has the service's
// keys, so that established sessions are Envoy's alone from the start.
func newStack(t *testing.T, r recipe) *launch.Stack {
	t.Helper()
	s, err := launch.StartStack(context.Background(), bins, launch.Options{Dir: t.TempDir(), Mode: r.mode,
		PoolName: "mcp", KeySources: []launch.KeySource{r.source}, EnvoyYAML: r.yaml, LoadFactor: 1.25})
	if err != nil {
		t.Fatal(err)
	}
	launchtest.CloseWhenDone(t, s)
	if r.mode == "verified" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.WaitJWKS(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// streams is how many ext_proc streams Envoy has opened so far.
func streams(t *testing.T, s *launch.Stack) int {
	t.Helper()
	n, err := s.EnvoyStat("http.ingress.ext_proc.streams_started")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// calls is what the whoami tool answers.
type calls struct {
	Server  string `json:"server"`
	Session string `json:"session"`
	Calls   int    `json:"calls"`
	// Internal: the gateway's x-affinity-* headers the server received.
	Internal []string `json:"internal"`
}

// session is one MCP client session through Envoy.
type session struct {
	cs       *mcp.ClientSession
	server   string // the server of its first call
	serverID string // the session's id as the server knows it
	calls    int
}

// sessionless counts the clients' requests without a session header (the
// SDK's server/discover and initialize): the only ones the verified recipe
// takes to the service.
var sessionless atomic.Int64

// counting is the clients' transport: it counts sessionless requests.
type counting struct{}

func (counting) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Mcp-Session-Id") == "" {
		sessionless.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func connect(ctx context.Context, url string) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "affinity-test", Version: "v1"}, nil)
	return client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1, HTTPClient: &http.Client{Transport: counting{}}}, nil)
}

func whoami(ctx context.Context, cs *mcp.ClientSession) (calls, error) {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
	if err != nil {
		return calls{}, err
	}
	if res.IsError {
		return calls{}, fmt.Errorf("tool error: %v", res.Content)
	}
	var c calls
	data, _ := json.Marshal(res.StructuredContent)
	return c, json.Unmarshal(data, &c)
}

// call calls whoami once and checks that the session's server and count
// go on; it counts the call.
func (s *session) call(ctx context.Context) error {
	c, err := whoami(ctx, s.cs)
	if err != nil {
		return err
	}
	if s.server == "" {
		s.server = c.Server
	}
	s.calls++
	if c.Server != s.server || c.Calls != s.calls {
		return fmt.Errorf("call %d of session %s answered by %s with count %d (the session began on %s)", s.calls, c.Session, c.Server, c.Calls, s.server)
	}
	for _, h := range c.Internal {
		// x-affinity-primary (base64 of the primary's ip:port) is what
		// the verified mode's stateful_session reads, and it reaches the
		// upstream in every verified pool; anything else is the
		// gateway's own business.
		if !strings.EqualFold(h, "x-affinity-primary") {
			return fmt.Errorf("the server received the gateway's header %s (all: %v)", h, c.Internal)
		}
	}
	s.serverID = c.Session
	return nil
}

// runSessions opens n sessions at once and makes each call whoami k times;
// it returns the sessions and the failures (a session whose call failed or
// reached another server counts once).
func runSessions(t *testing.T, url string, n, k int) ([]*session, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sessions := make([]*session, n)
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs, err := connect(ctx, url)
			if err == nil {
				sessions[i] = &session{cs: cs}
				for range k {
					if err = sessions[i].call(ctx); err != nil {
						break
					}
				}
			}
			if err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Logf("%d of %d sessions failed, e.g. %s", len(failures), n, failures[0])
	}
	return sessions, len(failures)
}

// TestMCPSessionsStay: 100 MCP sessions of the official Go SDK through
// Envoy and the service, 20 tool calls each, in each recipe: every call on
// the server that issued the session, none "session not found". With the
// envelope the client holds a signed token whose claim sid is the server's
// own id, and the server only ever sees its id; in the verified recipe Envoy
// routes every request but the initialize by itself (one ext_proc stream
// per session). Plain round robin beside them loses most sessions.
func TestMCPSessionsStay(t *testing.T) {
	for _, r := range recipes {
		t.Run(r.name, func(t *testing.T) {
			s := newStack(t, r)
			before, beforeSessionless := streams(t, s), sessionless.Load()
			sessions, failed := runSessions(t, s.URL("/mcp"), 100, 20)
			opened, unsessioned := streams(t, s)-before, int(sessionless.Load()-beforeSessionless)
			if failed > 0 {
				t.Fatalf("%d of 100 sessions failed with the service", failed)
			}
			servers := map[string]int{}
			for _, ss := range sessions {
				servers[ss.server]++
				if held := ss.cs.ID(); r.envelope && (held == ss.serverID || sid(t, held) != ss.serverID) {
					t.Fatalf("the client holds %q for the server's session %q, want an envelope of it", held, ss.serverID)
				} else if !r.envelope && held != ss.serverID {
					t.Fatalf("the client holds %q, the server knows %q", held, ss.serverID)
				}
				ss.cs.Close()
			}
			if len(servers) != 3 {
				t.Errorf("sessions per server %v, want all three servers used", servers)
			}
			if r.mode == "verified" && opened != unsessioned {
				t.Errorf("100 sessions took %d ext_proc streams, want %d: one for each request without a session header, none for the others", opened, unsessioned)
			}
			t.Logf("%s: 100 sessions × 20 calls, 0 failed; sessions per server %v; %d ext_proc streams (%d requests without a session header)", r.name, servers, opened, unsessioned)
		})
	}
	plain := newStack(t, recipe{name: "plain", yaml: filepath.Join("..", "..", "e2e", "bench", "baseline.yaml"), mode: "opaque", source: opaqueLearned.source})
	_, lost := runSessions(t, plain.URL("/mcp"), 100, 20)
	t.Logf("plain round robin: %d of 100 sessions failed", lost)
	if lost < 50 {
		t.Errorf("round robin lost only %d of 100 sessions: the comparison shows nothing", lost)
	}
}

// sid is the claim sid of an envelope (its signature is Envoy's and the
// service's business; the tests read what it carries).
func sid(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct{ SID string }
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims.SID
}

// TestMCPServerDies: when a server dies, its sessions' next calls fail
// (the SDK reports the session gone: another server does not know it) and
// a new session works at once; every other session goes on untouched, on
// its server, its count continuing.
func TestMCPServerDies(t *testing.T) {
	for _, r := range recipes {
		t.Run(r.name, func(t *testing.T) { serverDies(t, r) })
	}
}

func serverDies(t *testing.T, r recipe) {
	s := newStack(t, r)
	sessions, failed := runSessions(t, s.URL("/mcp"), 30, 2)
	if failed > 0 {
		t.Fatalf("%d sessions failed before the server died", failed)
	}
	dead := s.Backends[1]
	dead.Proc.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lost, kept int
	for _, ss := range sessions {
		err := ss.call(ctx)
		switch {
		case ss.server == dead.Name && err == nil:
			t.Errorf("a session of the dead server %s still answered", dead.Name)
		case ss.server == dead.Name:
			lost++
			cs, err := connect(ctx, s.URL("/mcp"))
			if err != nil {
				t.Fatalf("a new session after the loss: %v", err)
			}
			again := &session{cs: cs}
			if err := again.call(ctx); err != nil || again.server == dead.Name {
				t.Errorf("the new session: %v on %s", err, again.server)
			}
			cs.Close()
		case err != nil:
			t.Errorf("a session of %s failed: %v", ss.server, err)
		default:
			kept++
		}
		ss.cs.Close()
	}
	if lost == 0 || kept == 0 {
		t.Errorf("lost %d, kept %d: the sessions did not spread over the servers", lost, kept)
	}
	t.Logf("server %s died: its %d sessions ended (a new session works), the other %d went on", dead.Name, lost, kept)
}

// openOne opens one session through the stack and calls whoami once.
func openOne(t *testing.T, ctx context.Context, s *launch.Stack) *session {
	t.Helper()
	cs, err := connect(ctx, s.URL("/mcp"))
	if err != nil {
		t.Fatal(err)
	}
	ss := &session{cs: cs}
	if err := ss.call(ctx); err != nil {
		t.Fatal(err)
	}
	return ss
}

// TestMCPDeleteForgets: the DELETE that ends a session (the SDK's Close)
// makes the service forget the binding it learned.
func TestMCPDeleteForgets(t *testing.T) {
	s := newStack(t, opaqueLearned)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ss := openOne(t, ctx, s)
	cs := ss.cs
	explain := func() string {
		t.Helper()
		resp, err := s.AdminClient().Get(s.ServerURL("/debug/explain?pool=mcp&key=" + url.QueryEscape(cs.ID())))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var x struct{ Outcome, Host string }
		if err := json.NewDecoder(resp.Body).Decode(&x); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("explain: %s %v", resp.Status, err)
		}
		return x.Outcome + " " + x.Host
	}
	if got := explain(); got != "pinned "+ss.server {
		t.Fatalf("the open session explains as %q, want pinned to %s", got, ss.server)
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	if got := explain(); !strings.HasPrefix(got, "pass-through") {
		t.Fatalf("the ended session explains as %q, want pass-through (forgotten)", got)
	}
}

// TestRecipesFollowTheEnvoyFolder keeps envoy.yaml and envoy-opaque.yaml
// what their headers say they are: envoy/verified.yaml and envoy/opaque.yaml
// with the changes listed there.
func TestRecipesFollowTheEnvoyFolder(t *testing.T) {
	read := func(path string) string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		return text[strings.Index(text, "node:"):] // after the header comment
	}
	mcpCluster := [][2]string{
		{"                  cluster: app\n", "                  cluster: mcp\n                  # No per-request timeout: MCP answers and a session's GET are\n                  # event streams that last.\n                  timeout: 0s\n"},
		{"  - name: app\n    type: EDS", "  - name: mcp\n    type: EDS"},
	}
	hashHeader := [2]string{"                      - cookie: {name: affinity}", "                      - header: {header_name: mcp-session-id}"}
	for _, tt := range []struct {
		recipe, base string
		changes      [][2]string
	}{
		{"envoy.yaml", "verified.yaml", append(mcpCluster, launch.SessionHeaderChanges("mcp-session-id", "mcp")...)},
		{"envoy-opaque.yaml", "opaque.yaml", append(mcpCluster, hashHeader)},
	} {
		want, err := launch.ApplyChanges(read(filepath.Join("..", "..", "envoy", tt.base)), tt.changes)
		if err != nil {
			t.Fatalf("envoy/%s changed: update %s and this test: %v", tt.base, tt.recipe, err)
		}
		if got := read(tt.recipe); got != want {
			t.Errorf("%s differs from envoy/%s beyond the changes its header lists: copy %s's changes over", tt.recipe, tt.base, tt.base)
		}
	}
}

// TestMCPEnvelopeDelete: with the envelope nothing is stored, and the
// DELETE that ends a session (the SDK's Close) still reaches the server that
// holds it: afterwards that envelope's requests are answered 404 by it, as
// the protocol wants for an ended session.
func TestMCPEnvelopeDelete(t *testing.T) {
	for _, r := range []recipe{verifiedEnvelope, opaqueEnvelope} {
		t.Run(r.name, func(t *testing.T) {
			s := newStack(t, r)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cs := openOne(t, ctx, s).cs
			envelope := cs.ID()
			post := func() int {
				t.Helper()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL("/mcp"),
					strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"whoami","arguments":{}}}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Mcp-Session-Id", envelope)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			if got := post(); got != http.StatusOK {
				t.Fatalf("the open session's envelope: %d, want 200", got)
			}
			if err := cs.Close(); err != nil {
				t.Fatal(err)
			}
			if got := post(); got != http.StatusNotFound {
				t.Fatalf("after the DELETE: %d, want 404 from the server that held the session", got)
			}
		})
	}
}
