package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const testKey = "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"

// syncBuffer is a bytes.Buffer the server's logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func config(hosts ...string) string {
	var b strings.Builder
	b.WriteString("keys: {file: keys.txt}\npools:\n  - hosts:\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "      - {address: '%s'}\n", h)
	}
	return b.String()
}

func eventually(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
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

// startRun runs the server in-process with args (the listeners are added)
// until the test ends; it returns the gRPC and admin addresses.
func startRun(t *testing.T, out io.Writer, args ...string) (grpcAddr, adminAddr string) {
	t.Helper()
	grpcAddr, adminAddr = freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, append(args, "-grpc-addr", grpcAddr, "-admin-addr", adminAddr), out, out)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, func() error {
		resp, err := http.Get("http://" + adminAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	return grpcAddr, adminAddr
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
	var logs syncBuffer
	grpcAddr, adminAddr := startRun(t, &logs, "-config", cfg, "-reload-interval", "20ms")
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
}

func TestRunReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	// An hour between checks: only the signal can bring the change in.
	_, adminAddr := startRun(t, io.Discard, "-config", cfg, "-reload-interval", "1h")
	eventually(t, poolIs(adminAddr, "127.0.0.1:8081"))
	writeFile(t, cfg, config("127.0.0.1:8085"))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, poolIs(adminAddr, "127.0.0.1:8085"))
}

func TestRunRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "keys: {}\npools:\n  - hosts:\n      - {address: 'x'}\n      - {address: '127.0.0.1:1', weight: -1}\n")
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, config("127.0.0.1:8081"))
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	noPassword := filepath.Join(dir, "redis.yaml")
	writeFile(t, noPassword, "keys: {file: keys.txt}\nstore:\n  redis: {addresses: ['127.0.0.1:6379'], password_file: missing}\npools:\n  - hosts: [{address: '127.0.0.1:1'}]\n")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no config", nil, []string{"-config is required"}},
		{"redis password file missing", []string{"-config", noPassword}, []string{"store.redis.password_file: open", "missing"}},
		{"check reads the redis files", []string{"check", "-config", noPassword}, []string{"redis.yaml: store.redis.password_file: open"}},
		{"every problem of the file at once", []string{"-config", bad},
			[]string{"bad.yaml:1: keys:", "bad.yaml:4: pools[0].hosts[0].address", "bad.yaml:5: pools[0].hosts[1].weight"}},
		{"missing file", []string{"-config", filepath.Join(dir, "nope.yaml")}, []string{"nope.yaml: no such file"}},
		{"bad flags together", []string{"-config", good, "-log-format", "xml"}, []string{"-log-format \"xml\""}},
		{"stray argument", []string{"-config", good, "extra"}, []string{"unexpected arguments: extra"}},
		{"busy port", []string{"-config", good, "-grpc-addr", "256.0.0.1:1"}, []string{"256.0.0.1"}},
		{"check finds problems", []string{"check", "-config", bad}, []string{"bad.yaml:4:"}},
		{"doctor needs one Envoy", []string{"doctor", "-config", good}, []string{"one of -envoy-admin and -envoy-yaml"}},
		{"doctor: one Envoy only", []string{"doctor", "-config", good, "-envoy-yaml", "x", "-envoy-admin", "y"}, []string{"one of -envoy-admin and -envoy-yaml"}},
		{"doctor exits non-zero when sessions break", []string{"doctor", "-config", good, "-envoy-yaml", filepath.Join("..", "..", "e2e", "bench", "baseline.yaml")},
			[]string{"would break sessions"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Run(context.Background(), tt.args, &out, &out)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestRunCommands(t *testing.T) {
	dir := t.TempDir()
	mixed := filepath.Join(dir, "mixed.yaml")
	writeFile(t, mixed, "keys: {file: mixed.txt}\npools:\n  - hosts: [{address: '127.0.0.1:1'}]\n")
	writeFile(t, filepath.Join(dir, "mixed.txt"), "e1:ed25519:ZWQyNTUxOS1zZWVkLWZvci10ZXN0cy0wMTIzNDU2Nzg\n"+testKey+"\n")
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, config("127.0.0.1:8081", "127.0.0.1:8082"))
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	withRedis := filepath.Join(dir, "redis.yaml")
	writeFile(t, withRedis, "keys: {file: keys.txt}\nstore:\n  redis: {addresses: ['127.0.0.1:6379'], password_file: pw}\npools:\n  - hosts: [{address: '127.0.0.1:1'}]\n")
	writeFile(t, filepath.Join(dir, "pw"), "secret\n")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"help lists every flag with its default", []string{"-h"},
			[]string{"-config", "-grpc-addr", `(default "127.0.0.1:9002")`, "-grpc-tls-cert", "-grpc-tls-key", "-grpc-client-ca", "-admin-addr", "-reload-interval", "-shutdown-grace", "-log-level", "-log-format", "keygen", "check"}},
		{"check", []string{"check", "-config", good}, []string{"pool default: mode verified, 2 hosts, cookie affinity", "good.yaml: ok"}},
		{"check with redis", []string{"check", "-config", withRedis}, []string{"store: redis single 127.0.0.1:6379, key prefix \"envoy-affinity:\"", "redis.yaml: ok"}},
		{"keygen", []string{"keygen", "-id", "k7"}, []string{"k7:ed25519:"}},
		{"version", []string{"version"}, []string{"envoy-affinity ", "(tested with Envoy " + testedEnvoy + ")"}},
		{"keygen hs256", []string{"keygen", "-id", "k8", "-alg", "hs256"}, []string{"k8:hs256:"}},
		{"jwks publishes public keys only", []string{"jwks", "-config", mixed}, []string{`"kty":"OKP","crv":"Ed25519","alg":"EdDSA","kid":"e1"`}},
		{"doctor reports warnings and exits 0", []string{"doctor", "-config", good, "-envoy-yaml", filepath.Join("..", "..", "envoy", "verified.yaml")},
			[]string{"warning hosts.extra: pool default, cluster \"app\": Envoy's member 127.0.0.1:8083 is not one of the pool's hosts", "0 errors, 1 warnings"}},
		{"jwks with secrets for a local file", []string{"jwks", "-config", mixed, "-with-secrets"}, []string{`"kty":"oct","alg":"HS256","kid":"k1"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Run(context.Background(), tt.args, &out, &out); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// TestExampleConfigsAreValid keeps the shipped example configs loadable,
// the README's annotated example included.
func TestExampleConfigsAreValid(t *testing.T) {
	t.Setenv("AFFINITY_KEYS", testKey)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## Configuration")
	_, example, _ := strings.Cut(section, "```yaml\n")
	example, _, _ = strings.Cut(example, "```")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, filepath.Join(dir, "redis-password"), "secret\n")
	writeFile(t, filepath.Join(dir, "readme.yaml"), example)
	// The MCP recipe names a keys file beside it: checked in a copy.
	mcp, err := os.ReadFile("../../examples/mcp/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "mcp.yaml"), string(mcp))
	for _, path := range []string{"../../examples/compose/config.yaml", filepath.Join(dir, "readme.yaml"), filepath.Join(dir, "mcp.yaml")} {
		var out bytes.Buffer
		if err := Run(context.Background(), []string{"check", "-config", path}, &out, &out); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}

// poolsView is the part of /debug/pools the tests read.
type poolsView struct {
	Pools []struct {
		Source struct {
			Kind   string `json:"kind"`
			Errors int    `json:"errors"`
		} `json:"source"`
	} `json:"pools"`
}

func httpGetJSON(url string) (poolsView, error) {
	var v poolsView
	resp, err := http.Get(url)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&v)
	return v, err
}

// TestTestedEnvoyMatchesMakefile keeps the version the binary reports equal to
// the one the Makefile fetches and internal/launch expects.
func TestTestedEnvoyMatchesMakefile(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "ENVOY_VERSION := "+testedEnvoy+"\n") {
		t.Fatalf("the Makefile's ENVOY_VERSION is not %s", testedEnvoy)
	}
	if launch.EnvoyVersion != testedEnvoy {
		t.Fatalf("internal/launch expects Envoy %s, the binary says %s", launch.EnvoyVersion, testedEnvoy)
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
			var logs syncBuffer
			startRun(t, &logs, "-config", cfg, "-reload-interval", "20ms")
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
	mtls := []string{"-grpc-tls-cert", filepath.Join(dir, "tls.crt"), "-grpc-tls-key", filepath.Join(dir, "tls.key"), "-grpc-client-ca", filepath.Join(dir, "ca.crt")}
	const grpcWarning, adminWarning = "ext_proc gRPC listener listens beyond loopback", "the admin API (drain, explain, metrics) listens beyond loopback"
	tests := []struct {
		name              string
		grpcAll, adminAll bool
		flags             []string
		want, notWant     []string
	}{
		{"both on loopback", false, false, nil, nil, []string{grpcWarning, adminWarning}},
		{"gRPC on every interface, plaintext", true, false, nil, []string{grpcWarning}, []string{adminWarning}},
		{"gRPC on every interface, TLS without client certificates", true, false, mtls[:4], []string{grpcWarning}, nil},
		{"gRPC on every interface, mutual TLS", true, false, mtls, nil, []string{grpcWarning}},
		{"admin on every interface without a token", false, true, nil, []string{adminWarning}, []string{grpcWarning}},
		{"admin on every interface with a token", false, true, []string{"-admin-token-file", filepath.Join(dir, "token")}, nil, []string{adminWarning}},
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
			grpcAddr, adminAddr := addr(tt.grpcAll), addr(tt.adminAll)
			var logs syncBuffer
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- Run(ctx, append([]string{"-config", cfg, "-grpc-addr", grpcAddr, "-admin-addr", adminAddr}, tt.flags...), &logs, &logs)
			}()
			eventually(t, func() error {
				if !strings.Contains(logs.String(), "msg=serving") {
					return fmt.Errorf("not serving yet")
				}
				return nil
			})
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
