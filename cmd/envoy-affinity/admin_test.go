package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// adminCall makes an admin request and decodes a JSON answer into out.
func adminCall(t *testing.T, method, url, token string, out any) int {
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

type adminHost struct {
	ID            string     `json:"id"`
	State         string     `json:"state"`
	DrainingUntil *time.Time `json:"draining_until"`
	Sessions      int        `json:"sessions"`
	Operator      string     `json:"operator"`
}

func hostsOf(t *testing.T, admin string) map[string]adminHost {
	t.Helper()
	var out struct {
		Pools []struct {
			Hosts []adminHost `json:"hosts"`
		} `json:"pools"`
	}
	if code := adminCall(t, "GET", admin+"/debug/pools", "", &out); code != http.StatusOK {
		t.Fatalf("/debug/pools: %d", code)
	}
	m := map[string]adminHost{}
	for _, h := range out.Pools[0].Hosts {
		m[h.ID] = h
	}
	return m
}

func TestAdminDrainUndrain(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, "keys: {file: keys.txt}\npools:\n  - name: web\n    hosts:\n      - {name: a, address: '127.0.0.1:8081'}\n      - {name: b, address: '127.0.0.1:8082'}\n")
	var logs syncBuffer
	_, adminAddr := startRun(t, &logs, "-config", cfg, "-reload-interval", "20ms")
	admin := "http://" + adminAddr

	var h adminHost
	if code := adminCall(t, "POST", admin+"/pools/web/hosts/b/drain?deadline=10m", "", &h); code != http.StatusOK {
		t.Fatalf("drain: %d", code)
	}
	if h.State != "draining" || h.Operator != "drain" || h.DrainingUntil == nil || time.Until(*h.DrainingUntil) < 9*time.Minute {
		t.Fatalf("drained host: %+v", h)
	}
	if got := hostsOf(t, admin)["b"]; got.State != "draining" || got.Operator != "drain" {
		t.Fatalf("/debug/pools after drain: %+v", got)
	}
	if !strings.Contains(logs.String(), "host draining") || !strings.Contains(logs.String(), "changed=b:active->draining") {
		t.Fatalf("no log line for the drain:\n%s", logs.String())
	}
	// A reload keeps the runtime drain.
	writeFile(t, cfg, "keys: {file: keys.txt}\npools:\n  - name: web\n    hosts:\n      - {name: a, address: '127.0.0.1:8081'}\n      - {name: b, address: '127.0.0.1:8082'}\n      - {name: c, address: '127.0.0.1:8083'}\n")
	eventually(t, func() error {
		hs := hostsOf(t, admin)
		if _, ok := hs["c"]; !ok {
			return fmt.Errorf("reload not in force: %+v", hs)
		}
		if hs["b"].State != "draining" {
			return fmt.Errorf("the reload dropped the drain: %+v", hs["b"])
		}
		return nil
	})
	if code := adminCall(t, "POST", admin+"/pools/web/hosts/b/undrain", "", &h); code != http.StatusOK || h.State != "active" || h.Operator != "undrain" {
		t.Fatalf("undrain: %d %+v", code, h)
	}
	// One line per host-set change: the reload's new host, the undrain.
	for _, want := range []string{`added="c=127.0.0.1:8083"`, `changed=b:draining->active`} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("%d log lines with %s, want 1:\n%s", n, want, logs.String())
		}
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
		{"GET", "/debug/pprof/", http.StatusNotFound}, // off without -pprof
	} {
		if code := adminCall(t, tc.method, admin+tc.path, "", nil); code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, code, tc.want)
		}
	}
	if hostsOf(t, admin)["a"].State != "active" {
		t.Fatal("a refused drain changed the host")
	}
}

func TestAdminExplain(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"))
	_, adminAddr := startRun(t, io.Discard, "-config", cfg)
	admin := "http://" + adminAddr

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
	if code := adminCall(t, "GET", admin+"/debug/explain?key=session-42", "", &x); code != http.StatusOK {
		t.Fatalf("explain key: %d", code)
	}
	if x.Host == "" || len(x.Order) != 3 || len(x.Why) == 0 {
		t.Fatalf("explain key: %+v", x)
	}
	x.Host = ""
	if code := adminCall(t, "GET", admin+"/debug/explain?pool=default&cookie=garbage", "", &x); code != http.StatusOK {
		t.Fatalf("explain cookie: %d", code)
	}
	if x.Outcome != "new" || x.Reason != "invalid-cookie" || x.Token.Valid || x.Token.Error == "" || x.Host != "" {
		t.Fatalf("explain garbage cookie: %+v", x)
	}
	for _, q := range []string{"", "?pool=nope&key=k", "?key=k&cookie=c"} {
		if code := adminCall(t, "GET", admin+"/debug/explain"+q, "", nil); code == http.StatusOK {
			t.Errorf("explain%s accepted", q)
		}
	}
}

func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	tokenFile := filepath.Join(dir, "admin-token")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	writeFile(t, tokenFile, "s3cret\n")
	var logs syncBuffer
	_, adminAddr := startRun(t, &logs, "-config", cfg, "-admin-token-file", tokenFile, "-pprof")
	admin := "http://" + adminAddr

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
		if code := adminCall(t, tc.method, admin+tc.path, tc.token, nil); code != tc.want {
			t.Errorf("%s %s with %q: %d, want %d", tc.method, tc.path, tc.token, code, tc.want)
		}
	}
	// Rotated in place: the new token is in force, the old one is not.
	writeFile(t, tokenFile, "n3w-token\n")
	eventually(t, func() error {
		if code := adminCall(t, "GET", admin+"/debug/pools", "n3w-token", nil); code != http.StatusOK {
			return fmt.Errorf("new token: %d", code)
		}
		return nil
	})
	if code := adminCall(t, "GET", admin+"/debug/pools", "s3cret", nil); code != http.StatusUnauthorized {
		t.Fatalf("old token still accepted: %d", code)
	}
	// An emptied file keeps the token in force and says so once.
	writeFile(t, tokenFile, "")
	for range 3 {
		if code := adminCall(t, "GET", admin+"/debug/pools", "n3w-token", nil); code != http.StatusOK {
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

// TestAdminRefusesCrossSiteStateChanges: a web page in the operator's
// browser cannot drain a host: cross-origin requests are refused, and
// without a token so is a Host that is not an IP address or localhost (DNS
// rebinding makes the page same-origin, but not its Host).
func TestAdminRefusesCrossSiteStateChanges(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, "keys: {file: keys.txt}\npools:\n  - name: web\n    hosts:\n      - {name: a, address: '127.0.0.1:8081'}\n      - {name: b, address: '127.0.0.1:8082'}\n")
	tokenFile := filepath.Join(dir, "admin-token")
	writeFile(t, tokenFile, "s3cret\n")
	var logs syncBuffer
	_, open := startRun(t, &logs, "-config", cfg)
	_, guarded := startRun(t, &logs, "-config", cfg, "-admin-token-file", tokenFile)
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
			req, err := http.NewRequest("POST", "http://"+tt.admin+"/pools/web/hosts/b/drain?deadline=10m", nil)
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

// TestAdminClosesIdleConnections: a keep-alive connection that sends
// nothing more is closed after the idle timeout, and a request that does
// not finish its headers after the header timeout.
func TestAdminClosesIdleConnections(t *testing.T) {
	saved := adminTimeouts
	adminTimeouts.idle, adminTimeouts.readHeader = 100*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { adminTimeouts = saved })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newAdminServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }))
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
