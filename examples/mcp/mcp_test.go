package mcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// bins runs the MCP server of ./server as the stack's backends.
var bins launch.Binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "envoy-affinity-mcp-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if bins, err = launch.Build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		bins.Backend = filepath.Join(dir, "mcp-server")
		if out, err := exec.Command("go", "build", "-o", bins.Backend, "./server").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./server: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// poolYAML is config.yaml's key source, as the stack writes its pool (with
// config.yaml's bounded loads).
const poolYAML = "    key_sources:\n      - {type: upstream_header, name: mcp-session-id}\n"

// newStack runs Envoy (yaml), the service and three MCP servers.
func newStack(t *testing.T, yaml string) *launch.Stack {
	t.Helper()
	s, err := launch.StartStack(context.Background(), bins, launch.Options{Dir: t.TempDir(), Mode: "opaque",
		PoolName: "mcp", PoolYAML: poolYAML, EnvoyYAML: yaml, LoadFactor: 1.25})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("envoy-affinity log:\n%s", s.Server.Tail())
		}
		s.Close()
	})
	return s
}

// calls is what the whoami tool answers.
type calls struct {
	Server  string `json:"server"`
	Session string `json:"session"`
	Calls   int    `json:"calls"`
}

// session is one MCP client session through Envoy.
type session struct {
	cs     *mcp.ClientSession
	server string // the server of its first call
	calls  int
}

func connect(ctx context.Context, url string) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "affinity-test", Version: "v1"}, nil)
	return client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1}, nil)
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
// Envoy and the service, 20 tool calls each: every call on the server that
// issued the session, none "session not found". Plain round robin beside
// it loses most of them.
func TestMCPSessionsStay(t *testing.T) {
	s := newStack(t, "envoy.yaml")
	sessions, failed := runSessions(t, s.URL("/mcp"), 100, 20)
	if failed > 0 {
		t.Fatalf("%d of 100 sessions failed with the service", failed)
	}
	servers := map[string]int{}
	for _, ss := range sessions {
		servers[ss.server]++
		ss.cs.Close()
	}
	if len(servers) != 3 {
		t.Errorf("sessions per server %v, want all three servers used", servers)
	}
	t.Logf("with the service: 100 sessions × 20 calls, 0 failed; sessions per server %v", servers)

	plain := newStack(t, filepath.Join("..", "..", "e2e", "bench", "baseline.yaml"))
	_, lost := runSessions(t, plain.URL("/mcp"), 100, 20)
	t.Logf("plain round robin: %d of 100 sessions failed", lost)
	if lost < 50 {
		t.Errorf("round robin lost only %d of 100 sessions: the comparison shows nothing", lost)
	}
}

// TestMCPServerDies: when a server dies, its sessions' next calls fail
// (the SDK reports the session gone: another server does not know it) and
// a new session works at once; every other session goes on untouched, on
// its server, its count continuing.
func TestMCPServerDies(t *testing.T) {
	s := newStack(t, "envoy.yaml")
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

// TestMCPDeleteForgets: the DELETE that ends a session (the SDK's Close)
// makes the service forget its binding.
func TestMCPDeleteForgets(t *testing.T) {
	s := newStack(t, "envoy.yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := connect(ctx, s.URL("/mcp"))
	if err != nil {
		t.Fatal(err)
	}
	ss := &session{cs: cs}
	if err := ss.call(ctx); err != nil {
		t.Fatal(err)
	}
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

// TestRecipeFollowsOpaque keeps envoy.yaml what its header says it is:
// envoy/opaque.yaml with three changes.
func TestRecipeFollowsOpaque(t *testing.T) {
	read := func(path string) string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		return text[strings.Index(text, "node:"):] // after the header comment
	}
	want := read(filepath.Join("..", "..", "envoy", "opaque.yaml"))
	for _, c := range [][2]string{
		{"                  cluster: app\n", "                  cluster: mcp\n                  # No per-request timeout: MCP answers and a session's GET are\n                  # event streams that last.\n                  timeout: 0s\n"},
		{"  - name: app\n    type: EDS", "  - name: mcp\n    type: EDS"},
		{"                      - cookie: {name: affinity}", "                      - header: {header_name: mcp-session-id}"},
	} {
		if strings.Count(want, c[0]) != 1 {
			t.Fatalf("envoy/opaque.yaml no longer has %q once: update envoy.yaml and this test", c[0])
		}
		want = strings.Replace(want, c[0], c[1], 1)
	}
	if got := read("envoy.yaml"); got != want {
		t.Fatal("envoy.yaml differs from envoy/opaque.yaml beyond its three changes: copy opaque.yaml's changes over")
	}
}
