package service

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
	"github.com/envoy-affinity/envoy-affinity/internal/tlsreload"
)

var (
	writeFile  = testkit.WriteFile
	eventually = testkit.Eventually
	freeAddr   = testkit.FreeAddr
	config     = testkit.Config
)

const testKey = testkit.Key

// settings are a server's settings as the command line's defaults make
// them, for the configuration file config (listeners left to startRun).
func settings(config string) Config {
	return Config{ConfigFile: config, ReloadInterval: 2 * time.Second, ShutdownGrace: 10 * time.Second,
		GRPCTLS:  grpcTLS("", "", ""),
		AdminTLS: tlsreload.Files{Cert: tlsreload.File{Label: "-admin-tls-cert"}, Key: tlsreload.File{Label: "-admin-tls-key"}}}
}

// grpcTLS are the gRPC listener's TLS files, labelled as the command
// line labels them.
func grpcTLS(cert, key, ca string) tlsreload.Files {
	return tlsreload.Files{Cert: tlsreload.File{Path: cert, Label: "-grpc-tls-cert"}, Key: tlsreload.File{Path: key, Label: "-grpc-tls-key"},
		ClientCA: tlsreload.File{Path: ca, Label: "-grpc-client-ca"}}
}

// textLog is the command line's default log: text, info, to out.
func textLog(out io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(out, nil)) }

// runUntilCleanup runs the server with cfg until the test ends.
func runUntilCleanup(t *testing.T, out io.Writer, cfg Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, textLog(out)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// startRun runs the server with cfg on loopback listeners until the test
// ends; it returns the gRPC and admin addresses once the admin API answers.
func startRun(t *testing.T, out io.Writer, cfg Config) (grpcAddr, adminAddr string) {
	t.Helper()
	grpcAddr, adminAddr = freeAddr(t), freeAddr(t)
	cfg.GRPCAddr, cfg.AdminAddr = grpcAddr, adminAddr
	runUntilCleanup(t, out, cfg)
	eventually(t, func() error {
		resp, err := http.Get("http://" + adminAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	return grpcAddr, adminAddr
}

// serving is a condition for eventually: the log says the server serves.
func serving(logs *testkit.SyncBuffer) func() error {
	return func() error {
		if !strings.Contains(logs.String(), "msg=serving") {
			return fmt.Errorf("not serving yet")
		}
		return nil
	}
}

func poolAddresses(adminAddr string) (string, error) {
	resp, err := http.Get("http://" + adminAddr + "/debug/pools")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Pools []struct {
			Hosts []struct{ Address string } `json:"hosts"`
		} `json:"pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	var addrs []string
	for _, h := range out.Pools[0].Hosts {
		addrs = append(addrs, h.Address)
	}
	return strings.Join(addrs, ","), nil
}

// poolIs is a condition for eventually: the first pool holds addrs.
func poolIs(adminAddr, addrs string) func() error {
	return func() error {
		got, err := poolAddresses(adminAddr)
		if err == nil && got != addrs {
			err = fmt.Errorf("pool %q, want %q", got, addrs)
		}
		return err
	}
}

func TestRunReloads(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081", "127.0.0.1:8082"))
	var logs testkit.SyncBuffer
	s := settings(cfg)
	s.ReloadInterval = 20 * time.Millisecond
	grpcAddr, adminAddr := startRun(t, &logs, s)
	want := func(addrs string) func() error { return poolIs(adminAddr, addrs) }
	eventually(t, want("127.0.0.1:8081,127.0.0.1:8082"))

	// The JWKS endpoint never serves an HS256 secret.
	resp, err := http.Get("http://" + adminAddr + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != `{"keys":[]}` {
		t.Fatalf("JWKS of an HS256-only keyring: %s", body)
	}

	// gRPC health answers SERVING.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hr, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}

	// A host removed from the file: in force without a restart.
	writeFile(t, cfg, config("127.0.0.1:8081"))
	eventually(t, want("127.0.0.1:8081"))

	// A bad file is refused, reported with file and line, and the old config stays.
	writeFile(t, cfg, config("127.0.0.1:8081", "not-an-address"))
	eventually(t, func() error {
		if !strings.Contains(logs.String(), "config.yaml:5: pools[0].hosts[1].address") {
			return fmt.Errorf("no reload error in the log:\n%s", logs.String())
		}
		return nil
	})
	eventually(t, want("127.0.0.1:8081"))
	writeFile(t, cfg, config("127.0.0.1:8082"))
	eventually(t, want("127.0.0.1:8082"))

	// A broken keys file is refused too.
	writeFile(t, filepath.Join(dir, "keys.txt"), "k1:short\n")
	eventually(t, func() error {
		if !strings.Contains(logs.String(), "keys.txt: line 1") {
			return fmt.Errorf("no keys error in the log")
		}
		return nil
	})
	eventually(t, want("127.0.0.1:8082"))

	// Fixed again: the next good file is taken.
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8083"))
	eventually(t, want("127.0.0.1:8083"))

	// The reloads are counted.
	resp, err = http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"envoy_affinity_config_reloads_total", "envoy_affinity_config_reload_errors_total"} {
		if v := metricValue(string(body), name); v < 2 {
			t.Errorf("%s = %v, want at least 2", name, v)
		}
	}
}

func TestRunReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	// An hour between looks: only the signal can bring the change in.
	s := settings(cfg)
	s.ReloadInterval = time.Hour
	_, adminAddr := startRun(t, io.Discard, s)
	eventually(t, poolIs(adminAddr, "127.0.0.1:8081"))
	writeFile(t, cfg, config("127.0.0.1:8085"))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, poolIs(adminAddr, "127.0.0.1:8085"))
}

// TestDrainLastsAcrossReloads: a host drained through the admin API stays
// drained when a reload changes the configuration, and each change of the
// host set is logged once.
func TestDrainLastsAcrossReloads(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, "keys: {file: keys.txt}\npools:\n  - name: web\n    hosts:\n      - {name: a, address: '127.0.0.1:8081'}\n      - {name: b, address: '127.0.0.1:8082'}\n")
	var logs testkit.SyncBuffer
	s := settings(cfg)
	s.ReloadInterval = 20 * time.Millisecond
	_, adminAddr := startRun(t, &logs, s)
	admin := "http://" + adminAddr
	post := func(path string) {
		t.Helper()
		resp, err := http.Post(admin+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
	}
	states := func() (map[string]string, error) {
		resp, err := http.Get(admin + "/debug/pools")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var out struct {
			Pools []struct {
				Hosts []struct{ ID, State string } `json:"hosts"`
			} `json:"pools"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return nil, err
		}
		m := map[string]string{}
		for _, h := range out.Pools[0].Hosts {
			m[h.ID] = h.State
		}
		return m, nil
	}

	post("/pools/web/hosts/b/drain?deadline=10m")
	if !strings.Contains(logs.String(), "host draining") || !strings.Contains(logs.String(), "changed=b:active->draining") {
		t.Fatalf("no log line for the drain:\n%s", logs.String())
	}
	// A reload keeps the runtime drain.
	writeFile(t, cfg, "keys: {file: keys.txt}\npools:\n  - name: web\n    hosts:\n      - {name: a, address: '127.0.0.1:8081'}\n      - {name: b, address: '127.0.0.1:8082'}\n      - {name: c, address: '127.0.0.1:8083'}\n")
	eventually(t, func() error {
		hs, err := states()
		if err != nil {
			return err
		}
		if _, ok := hs["c"]; !ok {
			return fmt.Errorf("reload not in force: %+v", hs)
		}
		if hs["b"] != "draining" {
			return fmt.Errorf("the reload dropped the drain: %+v", hs)
		}
		return nil
	})
	post("/pools/web/hosts/b/undrain")
	// One line per host-set change: the reload's new host, the undrain.
	for _, want := range []string{`added="c=127.0.0.1:8083"`, `changed=b:draining->active`} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("%d log lines with %s, want 1:\n%s", n, want, logs.String())
		}
	}
}

// TestAdminWiring: the admin token and the profiler reach the admin API.
func TestAdminWiring(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	writeFile(t, filepath.Join(dir, "token"), "s3cret\n")
	s := settings(cfg)
	s.AdminTokenFile, s.Pprof = filepath.Join(dir, "token"), true
	_, adminAddr := startRun(t, io.Discard, s)
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/readyz", "", http.StatusOK},
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "s3cret", http.StatusOK},
		{"/debug/pprof/", "s3cret", http.StatusOK},
		{"/debug/doctor", "s3cret", http.StatusNotFound}, // no pool reads Envoy
	} {
		req, _ := http.NewRequest("GET", "http://"+adminAddr+tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.token, resp.StatusCode, tc.want)
		}
	}
}

// TestRunRefuses: settings and files that cannot work stop the start.
func TestRunRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, config("127.0.0.1:8081"))
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	noReload := settings(good)
	noReload.ReloadInterval = 0
	noToken := settings(good)
	noToken.AdminTokenFile = filepath.Join(dir, "nope")
	busy := settings(good)
	busy.GRPCAddr = "256.0.0.1:1"
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no reload interval", noReload, "reload interval must be positive"},
		{"token file missing", noToken, "admin token: stat"},
		{"bad listen address", busy, "256.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), tt.cfg, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestKeysFileModeWarning: a keys file its group or others may read is
// warned about once at start (a reload warns again only if the mode
// changed); one only its owner reads is not.
func TestKeysFileModeWarning(t *testing.T) {
	const warning = "the keys file can be read by others than its owner"
	for _, tt := range []struct {
		name string
		mode os.FileMode
		warn bool
	}{{"0600", 0o600, false}, {"0644", 0o644, true}, {"0640", 0o640, true}} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, keys := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "keys.txt")
			writeFile(t, keys, testKey+"\n")
			if err := os.Chmod(keys, tt.mode); err != nil {
				t.Fatal(err)
			}
			writeFile(t, cfg, config("127.0.0.1:8081"))
			var logs testkit.SyncBuffer
			s := settings(cfg)
			s.ReloadInterval = 20 * time.Millisecond
			startRun(t, &logs, s)
			if got := strings.Count(logs.String(), warning); got != map[bool]int{true: 1, false: 0}[tt.warn] {
				t.Fatalf("%d warnings for mode %o:\n%s", got, tt.mode, logs.String())
			}
		})
	}
}

// TestWarnsAboutOpenListeners: the service says at start when a listener
// others can reach has no client authentication: the admin API without a
// token, the gRPC listener without mutual TLS.
func TestWarnsAboutOpenListeners(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	writeFile(t, filepath.Join(dir, "token"), "s3cret\n")
	ca, err := launch.NewCA("warning test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Server("envoy-affinity.internal")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "tls.crt"), string(cert.CertPEM))
	writeFile(t, filepath.Join(dir, "tls.key"), string(cert.KeyPEM))
	writeFile(t, filepath.Join(dir, "ca.crt"), string(ca.PEM))
	tlsOnly := func(s *Config) { s.GRPCTLS = grpcTLS(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), "") }
	mutual := func(s *Config) {
		s.GRPCTLS = grpcTLS(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt"))
	}
	token := func(s *Config) { s.AdminTokenFile = filepath.Join(dir, "token") }
	const grpcWarning, adminWarning = "ext_proc gRPC listener listens beyond loopback", "the admin API (drain, explain, metrics) listens beyond loopback"
	tests := []struct {
		name              string
		grpcAll, adminAll bool
		set               func(*Config)
		want, notWant     []string
	}{
		{"both on loopback", false, false, nil, nil, []string{grpcWarning, adminWarning}},
		{"gRPC on every interface, plaintext", true, false, nil, []string{grpcWarning}, []string{adminWarning}},
		{"gRPC on every interface, TLS without client certificates", true, false, tlsOnly, []string{grpcWarning}, nil},
		{"gRPC on every interface, mutual TLS", true, false, mutual, nil, []string{grpcWarning}},
		{"admin on every interface without a token", false, true, nil, []string{adminWarning}, []string{grpcWarning}},
		{"admin on every interface with a token", false, true, token, nil, []string{adminWarning}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := func(all bool) string {
				a := freeAddr(t)
				if all {
					return strings.Replace(a, "127.0.0.1", "0.0.0.0", 1)
				}
				return a
			}
			s := settings(cfg)
			s.GRPCAddr, s.AdminAddr = addr(tt.grpcAll), addr(tt.adminAll)
			if tt.set != nil {
				tt.set(&s)
			}
			var logs testkit.SyncBuffer
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, s, textLog(&logs)) }()
			eventually(t, serving(&logs))
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("no warning %q:\n%s", w, logs.String())
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(logs.String(), w) {
					t.Errorf("a warning %q:\n%s", w, logs.String())
				}
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	_, adminAddr := startRun(t, io.Discard, settings(cfg))
	eventually(t, poolIs(adminAddr, "127.0.0.1:8081"))
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"envoy_affinity_streams_open 0", `envoy_affinity_host_state{host=`, "envoy_affinity_decision_duration_seconds_bucket"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestDNSDiscovery: the pool follows a DNS name whose answer changes; an
// empty answer keeps the last good hosts, and is counted.
func TestDNSDiscovery(t *testing.T) {
	dns := testkit.NewDNSServer(t)
	dns.SetA("127.0.0.11", "127.0.0.12")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, fmt.Sprintf("keys: {file: keys.txt}\npools:\n  - discovery:\n      interval: 100ms\n      dns: {name: web.test., port: 8080, server: '%s'}\n", dns.Addr()))
	_, adminAddr := startRun(t, io.Discard, settings(cfg))
	eventually(t, poolIs(adminAddr, "127.0.0.11:8080,127.0.0.12:8080"))
	dns.SetA("127.0.0.12", "127.0.0.13")
	eventually(t, poolIs(adminAddr, "127.0.0.12:8080,127.0.0.13:8080"))
	// An empty answer is not applied.
	dns.SetA()
	eventually(t, func() error {
		resp, err := http.Get("http://" + adminAddr + "/debug/pools")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var v struct {
			Pools []struct {
				Source struct {
					Kind   string `json:"kind"`
					Errors int    `json:"errors"`
				} `json:"source"`
			} `json:"pools"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return err
		}
		if v.Pools[0].Source.Kind != "dns" || v.Pools[0].Source.Errors == 0 {
			return fmt.Errorf("no failed read counted yet: %+v", v.Pools[0].Source)
		}
		return nil
	})
	eventually(t, poolIs(adminAddr, "127.0.0.12:8080,127.0.0.13:8080"))
}

// TestDNSDiscoverySRV: SRV records give each host its own port and weight;
// their targets resolve through the same server.
func TestDNSDiscoverySRV(t *testing.T) {
	dns := testkit.NewDNSServer(t)
	dns.SetA("127.0.0.21")
	dns.SetSRV(
		dnsmessage.SRVResource{Target: dnsmessage.MustNewName("a.web.test."), Port: 8081, Weight: 1},
		dnsmessage.SRVResource{Target: dnsmessage.MustNewName("b.web.test."), Port: 8082, Weight: 3},
	)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, fmt.Sprintf("keys: {file: keys.txt}\npools:\n  - discovery:\n      interval: 100ms\n      dns: {name: _http._tcp.web.test., srv: true, server: '%s'}\n", dns.Addr()))
	_, adminAddr := startRun(t, io.Discard, settings(cfg))
	eventually(t, poolIs(adminAddr, "127.0.0.21:8081,127.0.0.21:8082"))
}
