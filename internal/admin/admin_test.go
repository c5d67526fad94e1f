package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
	"github.com/envoy-affinity/envoy-affinity/internal/envoydoctor"
	"github.com/envoy-affinity/envoy-affinity/internal/poolstate"
	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
)

// twoHosts is a pool web of hosts a and b.
const twoHosts = "keys: {file: keys.txt}\npools:\n  - name: web\n    hosts:\n      - {name: a, address: '127.0.0.1:8081'}\n      - {name: b, address: '127.0.0.1:8082'}\n"

// fakeDiscovery reports a discovery for the pools it holds.
type fakeDiscovery map[string]poolstate.Discovery

func (f fakeDiscovery) Status(pool string) (poolstate.Discovery, bool) {
	d, ok := f[pool]
	return d, ok
}

// fakeShared is a shared store that takes or refuses operator states.
type fakeShared struct {
	err  error
	puts []string
}

func (f *fakeShared) PutOperatorState(pool, host string, st affinity.OperatorState) error {
	f.puts = append(f.puts, fmt.Sprintf("%s/%s draining=%v", pool, host, st.Draining))
	return f.err
}

// fakeDoctor answers with a report or an error.
type fakeDoctor struct {
	report *doctor.Report
	err    error
}

func (f fakeDoctor) Examine(context.Context) (*doctor.Report, error) { return f.report, f.err }

// shuttingDown is a Readiness.
type shuttingDown bool

func (s shuttingDown) ShuttingDown() bool { return bool(s) }

// metricsStub stands for the metrics handler.
var metricsStub = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("# metrics\n")) })

// serve serves the API of d over httptest until the test ends; it returns
// the server's URL. Unset Engine, Metrics and Log get defaults.
func serve(t *testing.T, d Deps) string {
	t.Helper()
	if d.Engine == nil {
		d.Engine = testkit.NewEngine(t, twoHosts)
	}
	if d.Metrics == nil {
		d.Metrics = metricsStub
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	srv := httptest.NewServer(New(d))
	t.Cleanup(srv.Close)
	return srv.URL
}

// call makes an admin request and decodes a JSON answer into out.
func call(t *testing.T, method, url, token string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, url, err, body)
		}
	}
	return resp.StatusCode
}

type host struct {
	ID            string     `json:"id"`
	State         string     `json:"state"`
	DrainingUntil *time.Time `json:"draining_until"`
	Sessions      int        `json:"sessions"`
	Operator      string     `json:"operator"`
	Shared        *bool      `json:"shared"`
	Warning       string     `json:"warning"`
}

func hostsOf(t *testing.T, admin string) map[string]host {
	t.Helper()
	var out struct {
		Pools []struct {
			Hosts []host `json:"hosts"`
		} `json:"pools"`
	}
	if code := call(t, "GET", admin+"/debug/pools", "", &out); code != http.StatusOK {
		t.Fatalf("/debug/pools: %d", code)
	}
	m := map[string]host{}
	for _, h := range out.Pools[0].Hosts {
		m[h.ID] = h
	}
	return m
}

func TestAdminDrainUndrain(t *testing.T) {
	var logs testkit.SyncBuffer
	admin := serve(t, Deps{Log: slog.New(slog.NewTextHandler(&logs, nil))})

	var h host
	if code := call(t, "POST", admin+"/pools/web/hosts/b/drain?deadline=10m", "", &h); code != http.StatusOK {
		t.Fatalf("drain: %d", code)
	}
	if h.State != "draining" || h.Operator != "drain" || h.DrainingUntil == nil || time.Until(*h.DrainingUntil) < 9*time.Minute {
		t.Fatalf("drained host: %+v", h)
	}
	if h.Shared != nil {
		t.Fatalf("without a shared store, the answer says shared: %+v", h)
	}
	if got := hostsOf(t, admin)["b"]; got.State != "draining" || got.Operator != "drain" {
		t.Fatalf("/debug/pools after drain: %+v", got)
	}
	if !strings.Contains(logs.String(), "host draining") {
		t.Fatalf("no log line for the drain:\n%s", logs.String())
	}
	if code := call(t, "POST", admin+"/pools/web/hosts/b/undrain", "", &h); code != http.StatusOK || h.State != "active" || h.Operator != "undrain" {
		t.Fatalf("undrain: %d %+v", code, h)
	}
	if !strings.Contains(logs.String(), "host undrained") {
		t.Fatalf("no log line for the undrain:\n%s", logs.String())
	}

	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/pools/nope/hosts/a/drain", http.StatusNotFound},
		{"POST", "/pools/web/hosts/zz/drain", http.StatusNotFound},
		{"POST", "/pools/web/hosts/a/drain?deadline=soon", http.StatusBadRequest},
		{"POST", "/pools/web/hosts/a/drain?deadline=-1m", http.StatusBadRequest},
		{"GET", "/pools/web/hosts/a/drain", http.StatusMethodNotAllowed},
		{"GET", "/debug/pprof/", http.StatusNotFound}, // off without Pprof
	} {
		if code := call(t, tc.method, admin+tc.path, "", nil); code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, code, tc.want)
		}
	}
	if hostsOf(t, admin)["a"].State != "active" {
		t.Fatal("a refused drain changed the host")
	}
}

// TestDrainShared: with a shared store, a drain is written to it and the
// answer says whether the other replicas have it.
func TestDrainShared(t *testing.T) {
	for _, tt := range []struct {
		name    string
		err     error
		shared  bool
		warning string
	}{
		{"redis took it", nil, true, ""},
		{"redis did not", errors.New("redis unreachable"), false, "not shared yet: redis unreachable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store := &fakeShared{err: tt.err}
			admin := serve(t, Deps{Shared: store})
			var h host
			if code := call(t, "POST", admin+"/pools/web/hosts/b/drain", "", &h); code != http.StatusOK {
				t.Fatalf("drain: %d", code)
			}
			if h.State != "draining" || h.Shared == nil || *h.Shared != tt.shared || h.Warning != tt.warning {
				t.Fatalf("drain answer: %+v", h)
			}
			if want := []string{"web/b draining=true"}; fmt.Sprint(store.puts) != fmt.Sprint(want) {
				t.Fatalf("the store got %v, want %v", store.puts, want)
			}
		})
	}
}

// TestPoolsDiscovery: /debug/pools says where a pool's hosts come from.
func TestPoolsDiscovery(t *testing.T) {
	last := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		name      string
		discovery Discovery
		want      string
	}{
		{"static", nil, `{"kind":"static","refreshes":0,"errors":0}`},
		{"dns", fakeDiscovery{"web": {Kind: "dns", Refreshes: 7, Errors: 2, LastRefresh: last}},
			`{"kind":"dns","refreshes":7,"errors":2,"last_refresh":"2026-01-02T03:04:05Z"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			admin := serve(t, Deps{Discovery: tt.discovery})
			var out struct {
				Pools []struct {
					Source json.RawMessage `json:"source"`
				} `json:"pools"`
			}
			if code := call(t, "GET", admin+"/debug/pools", "", &out); code != http.StatusOK {
				t.Fatalf("/debug/pools: %d", code)
			}
			// Compared as values: the key order and spacing are the encoder's.
			var got, want any
			if err := json.Unmarshal(out.Pools[0].Source, &got); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal([]byte(tt.want), &want)
			b, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			if string(b) != string(w) {
				t.Fatalf("source %s, want %s", b, w)
			}
		})
	}
}

func TestAdminExplain(t *testing.T) {
	admin := serve(t, Deps{Engine: testkit.NewEngine(t, testkit.Config("127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"))})

	var x struct {
		Outcome string   `json:"outcome"`
		Reason  string   `json:"reason"`
		Host    string   `json:"host"`
		Order   []any    `json:"order"`
		Why     []string `json:"why"`
		Token   struct {
			Valid bool   `json:"valid"`
			Error string `json:"error"`
		} `json:"token"`
	}
	if code := call(t, "GET", admin+"/debug/explain?key=session-42", "", &x); code != http.StatusOK {
		t.Fatalf("explain key: %d", code)
	}
	if x.Host == "" || len(x.Order) != 3 || len(x.Why) == 0 {
		t.Fatalf("explain key: %+v", x)
	}
	x.Host = ""
	if code := call(t, "GET", admin+"/debug/explain?pool=default&cookie=garbage", "", &x); code != http.StatusOK {
		t.Fatalf("explain cookie: %d", code)
	}
	if x.Outcome != "new" || x.Reason != "invalid-cookie" || x.Token.Valid || x.Token.Error == "" || x.Host != "" {
		t.Fatalf("explain garbage cookie: %+v", x)
	}
	for _, q := range []string{"", "?pool=nope&key=k", "?key=k&cookie=c"} {
		if code := call(t, "GET", admin+"/debug/explain"+q, "", nil); code == http.StatusOK {
			t.Errorf("explain%s accepted", q)
		}
	}
}

func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin-token")
	testkit.WriteFile(t, tokenFile, "s3cret\n")
	var logs testkit.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	token, err := NewToken(tokenFile, log)
	if err != nil {
		t.Fatal(err)
	}
	admin := serve(t, Deps{Engine: testkit.NewEngine(t, testkit.Config("127.0.0.1:8081")), Token: token, Pprof: true, Log: log})

	tests := []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/healthz", "", http.StatusOK},
		{"GET", "/readyz", "", http.StatusOK},
		{"GET", "/.well-known/jwks.json", "", http.StatusOK},
		{"GET", "/metrics", "", http.StatusUnauthorized},
		{"GET", "/metrics", "s3cret", http.StatusOK},
		{"GET", "/debug/pools", "wrong", http.StatusUnauthorized},
		{"GET", "/debug/pools", "s3cret", http.StatusOK},
		{"POST", "/pools/default/hosts/127.0.0.1:8081/drain", "", http.StatusUnauthorized},
		{"GET", "/debug/pprof/", "", http.StatusUnauthorized},
		{"GET", "/debug/pprof/", "s3cret", http.StatusOK},
	}
	for _, tc := range tests {
		if code := call(t, tc.method, admin+tc.path, tc.token, nil); code != tc.want {
			t.Errorf("%s %s with %q: %d, want %d", tc.method, tc.path, tc.token, code, tc.want)
		}
	}
	// Rotated in place: the new token is in force, the old one is not.
	testkit.WriteFile(t, tokenFile, "n3w-token\n")
	testkit.Eventually(t, func() error {
		if code := call(t, "GET", admin+"/debug/pools", "n3w-token", nil); code != http.StatusOK {
			return fmt.Errorf("new token: %d", code)
		}
		return nil
	})
	if code := call(t, "GET", admin+"/debug/pools", "s3cret", nil); code != http.StatusUnauthorized {
		t.Fatalf("old token still accepted: %d", code)
	}
	// An emptied file keeps the token in force and says so once.
	testkit.WriteFile(t, tokenFile, "")
	for range 3 {
		if code := call(t, "GET", admin+"/debug/pools", "n3w-token", nil); code != http.StatusOK {
			t.Fatalf("token lost to an empty file: %d", code)
		}
	}
	if n := strings.Count(logs.String(), "admin token file unusable"); n != 1 {
		t.Fatalf("%d log lines about the empty token file, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "n3w-token") || strings.Contains(logs.String(), "s3cret") {
		t.Fatal("the token reached the log")
	}
}

// TestNewToken: no file, no guard; a file that is missing or empty at the
// start is an error.
func TestNewToken(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if tok, err := NewToken("", log); tok != nil || err != nil {
		t.Fatalf("no file: %v, %v", tok, err)
	}
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	testkit.WriteFile(t, empty, " \n")
	for path, want := range map[string]string{filepath.Join(dir, "nope"): "admin token: stat", empty: "admin token: " + empty + " is empty"} {
		if _, err := NewToken(path, log); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", path, err, want)
		}
	}
}

// TestAdminRefusesCrossSiteStateChanges: a web page in the operator's browser
// cannot drain a host: cross-origin requests are refused, and without a
// token so is a Host that is not an IP address or localhost (DNS rebinding
// makes the page same-origin, but not its Host).
func TestAdminRefusesCrossSiteStateChanges(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	testkit.WriteFile(t, tokenFile, "s3cret\n")
	token, err := NewToken(tokenFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	open := serve(t, Deps{})
	guarded := serve(t, Deps{Token: token})
	tests := []struct {
		name, admin, host string
		headers           []string
		want              int
	}{
		{"curl on loopback", open, "", nil, http.StatusOK},
		{"localhost by name", open, "localhost", nil, http.StatusOK},
		{"a cross-site fetch", open, "", []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"another origin", open, "", []string{"Origin", "http://evil.example"}, http.StatusForbidden},
		{"DNS rebinding: same origin, a name as Host", open, "evil.example:9003", []string{"Origin", "http://evil.example:9003", "Sec-Fetch-Site", "same-origin"}, http.StatusForbidden},
		{"a name as Host with the token", guarded, "affinity.internal:9003", []string{"Authorization", "Bearer s3cret"}, http.StatusOK},
		{"a cross-site fetch with the token", guarded, "", []string{"Authorization", "Bearer s3cret", "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", tt.admin+"/pools/web/hosts/b/drain?deadline=10m", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.host != "" {
				req.Host = tt.host
			}
			for i := 0; i+1 < len(tt.headers); i += 2 {
				req.Header.Set(tt.headers[i], tt.headers[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestAdminClosesIdleConnections: a keep-alive connection that sends nothing
// more is closed after the idle timeout, and a request that does not
// finish its headers after the header timeout.
func TestAdminClosesIdleConnections(t *testing.T) {
	saved := timeouts
	timeouts.idle, timeouts.readHeader = 100*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { timeouts = saved })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for _, tt := range []struct{ name, send string }{
		{"idle after a request", "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"},
		{"headers never finished", "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte(tt.send)); err != nil {
				t.Fatal(err)
			}
			// Read until the server closes; the deadline only ends a test
			// whose server never does.
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = io.Copy(io.Discard, conn)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the server kept the connection open")
			}
		})
	}
}

// TestReadyz: ready with hosts; not during shutdown, nor without hosts.
func TestReadyz(t *testing.T) {
	for _, tt := range []struct {
		name     string
		engine   Engine
		stopping bool
		want     int
	}{
		{"hosts", nil, false, http.StatusOK},
		{"shutting down", nil, true, http.StatusServiceUnavailable},
		{"no hosts", testkit.NewEngine(t, "keys: {file: keys.txt}\npools:\n  - discovery: {dns: {name: web.test., port: 80}}\n"), false, http.StatusServiceUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			admin := serve(t, Deps{Engine: tt.engine, Readiness: shuttingDown(tt.stopping)})
			if code := call(t, "GET", admin+"/readyz", "", nil); code != tt.want {
				t.Fatalf("/readyz: %d, want %d", code, tt.want)
			}
		})
	}
}

// TestDoctor: /debug/doctor answers the report, 404 without an Envoy to
// examine, 502 when Envoy does not answer; without a doctor, nothing.
func TestDoctor(t *testing.T) {
	for _, tt := range []struct {
		name   string
		doctor Doctor
		want   int
		body   string
	}{
		{"no doctor", nil, http.StatusNotFound, "404 page not found"},
		{"no Envoy", fakeDoctor{err: envoydoctor.ErrNoEnvoy}, http.StatusNotFound, `"error": "no pool reads its hosts from Envoy`},
		{"Envoy silent", fakeDoctor{err: errors.New("connection refused")}, http.StatusBadGateway, `"error": "reading Envoy's configuration: connection refused"`},
		{"a report", fakeDoctor{report: &doctor.Report{Envoy: "127.0.0.1:9901"}}, http.StatusOK, `"problems": []`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			admin := serve(t, Deps{Doctor: tt.doctor})
			resp, err := http.Get(admin + "/debug/doctor")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || !strings.Contains(string(body), tt.body) {
				t.Fatalf("%d %s, want %d with %s", resp.StatusCode, body, tt.want, tt.body)
			}
		})
	}
}

// TestRoutes: only the probes and the public keys go without the token,
// and one registration adds an endpoint with its access.
func TestRoutes(t *testing.T) {
	a := New(Deps{Engine: testkit.NewEngine(t, twoHosts), Metrics: metricsStub, Doctor: fakeDoctor{}, Pprof: true, Log: slog.New(slog.DiscardHandler)})
	a.Handle("GET /debug/hello", "says hello", Private, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hello\n")) }))
	var public, stateChanges []string
	for _, r := range a.Routes() {
		if r.Help == "" {
			t.Errorf("%s: no help", r.Pattern)
		}
		switch r.Access {
		case Public:
			public = append(public, r.Pattern)
		case StateChange:
			stateChanges = append(stateChanges, r.Pattern)
		}
	}
	if got, want := strings.Join(public, ", "), "GET /healthz, GET /readyz, GET /.well-known/jwks.json"; got != want {
		t.Errorf("public endpoints: %s, want %s", got, want)
	}
	if got, want := strings.Join(stateChanges, ", "), "POST /pools/{pool}/hosts/{host}/drain, POST /pools/{pool}/hosts/{host}/undrain"; got != want {
		t.Errorf("state-changing endpoints: %s, want %s", got, want)
	}
	srv := httptest.NewServer(a)
	defer srv.Close()
	if code := call(t, "GET", srv.URL+"/debug/hello", "", nil); code != http.StatusOK {
		t.Fatalf("a registered endpoint: %d", code)
	}
}

// TestPoolsLoad: /debug/pools shows each host's requests in flight for a
// pool with a load block, and no load field for a pool without one.
func TestPoolsLoad(t *testing.T) {
	const hosts = "    hosts: [{address: '127.0.0.1:8081'}, {address: '127.0.0.1:8082'}]\n"
	tests := []struct {
		name, config string
		reading      map[string]float64
		want         []any // the hosts' load fields, in order (nil: left out)
	}{
		{"without a load block", "keys: {file: keys.txt}\npools:\n  - name: app\n" + hosts, map[string]float64{"127.0.0.1:8081": 5}, []any{nil, nil}},
		{"before the first reading", "keys: {file: keys.txt}\npools:\n  - name: app\n    load: {envoy_admins: ['127.0.0.1:1']}\n" + hosts, nil, []any{0.0, 0.0}},
		{"read", "keys: {file: keys.txt}\npools:\n  - name: app\n    load: {envoy_admins: ['127.0.0.1:1']}\n" + hosts, map[string]float64{"127.0.0.1:8081": 5}, []any{5.0, 0.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine := testkit.NewEngine(t, tt.config)
			if tt.reading != nil {
				engine.SetLoad("app", tt.reading, time.Now())
			}
			admin := serve(t, Deps{Engine: engine})
			var out struct {
				Pools []struct {
					Hosts []map[string]any `json:"hosts"`
				} `json:"pools"`
			}
			if code := call(t, "GET", admin+"/debug/pools", "", &out); code != http.StatusOK {
				t.Fatalf("/debug/pools: %d", code)
			}
			for i, h := range out.Pools[0].Hosts {
				if got, ok := h["load"]; got != tt.want[i] || ok != (tt.want[i] != nil) {
					t.Errorf("host %d: load %v (%v), want %v", i, got, ok, tt.want[i])
				}
				if _, ok := h["sessions"]; !ok {
					t.Errorf("host %d lost its sessions field: %v", i, h)
				}
			}
		})
	}
}
