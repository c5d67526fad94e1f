package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/envoyversion"
	"github.com/envoy-affinity/envoy-affinity/internal/service"
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
		{"check", []string{"check", "-config", good}, []string{"pool default: mode verified, 2 hosts\n  cookie affinity: new session 2 ext_proc messages, established sessions 0 (Envoy routes them alone), 2 at each refresh (every 5m0s)\n", "good.yaml: ok"}},
		{"check with redis", []string{"check", "-config", withRedis}, []string{"store: redis single 127.0.0.1:6379, key prefix \"envoy-affinity:\"", "redis.yaml: ok"}},
		{"keygen", []string{"keygen", "-id", "k7"}, []string{"k7:ed25519:"}},
		{"version", []string{"version"}, []string{"envoy-affinity ", "(tested with Envoy " + envoyversion.Tested + ")"}},
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

// TestParseFlags: each serve flag lands in its setting, the TLS files
// labelled by their flags; the defaults are the documented ones.
func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-config", "c.yaml"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := service.Config{ConfigFile: "c.yaml", GRPCAddr: "127.0.0.1:9002", AdminAddr: "127.0.0.1:9003", ReloadInterval: 2 * time.Second,
		ShutdownGrace: 10 * time.Second, DoctorInterval: time.Minute,
		GRPCTLS:  tlsreload.Files{Cert: tlsreload.File{Label: "-grpc-tls-cert"}, Key: tlsreload.File{Label: "-grpc-tls-key"}, ClientCA: tlsreload.File{Label: "-grpc-client-ca"}},
		AdminTLS: tlsreload.Files{Cert: tlsreload.File{Label: "-admin-tls-cert"}, Key: tlsreload.File{Label: "-admin-tls-key"}}}
	if o.Config != want || o.logLevel != "info" || o.logFormat != "text" {
		t.Fatalf("defaults:\n%+v %q %q\nwant\n%+v", o.Config, o.logLevel, o.logFormat, want)
	}
	o, err = parseFlags([]string{"-config", "c.yaml", "-grpc-addr", "0.0.0.0:1", "-admin-addr", "", "-reload-interval", "3s",
		"-shutdown-grace", "4s", "-shutdown-delay", "5s", "-log-level", "debug", "-log-format", "json", "-admin-token-file", "tok",
		"-pprof", "-grpc-tls-cert", "g.crt", "-grpc-tls-key", "g.key", "-grpc-client-ca", "ca.crt", "-admin-tls-cert", "a.crt",
		"-admin-tls-key", "a.key", "-ext-authz", "-doctor-interval", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want = service.Config{ConfigFile: "c.yaml", GRPCAddr: "0.0.0.0:1", AdminAddr: "", ReloadInterval: 3 * time.Second,
		ShutdownGrace: 4 * time.Second, ShutdownDelay: 5 * time.Second, AdminTokenFile: "tok", Pprof: true, ExtAuthz: true,
		GRPCTLS: tlsreload.Files{Cert: tlsreload.File{Path: "g.crt", Label: "-grpc-tls-cert"}, Key: tlsreload.File{Path: "g.key", Label: "-grpc-tls-key"},
			ClientCA: tlsreload.File{Path: "ca.crt", Label: "-grpc-client-ca"}},
		AdminTLS: tlsreload.Files{Cert: tlsreload.File{Path: "a.crt", Label: "-admin-tls-cert"}, Key: tlsreload.File{Path: "a.key", Label: "-admin-tls-key"}}}
	if o.Config != want || o.logLevel != "debug" || o.logFormat != "json" {
		t.Fatalf("set:\n%+v %q %q\nwant\n%+v", o.Config, o.logLevel, o.logFormat, want)
	}
	// Every problem at once.
	_, err = parseFlags([]string{"-reload-interval", "0", "-shutdown-grace", "-1s", "-shutdown-delay", "-1s", "-doctor-interval", "-1s",
		"-grpc-tls-key", "k", "-admin-tls-cert", "c", "-grpc-client-ca", "ca", "stray"}, io.Discard)
	for _, w := range []string{"-config is required", "unexpected arguments: stray", "-reload-interval must be positive",
		"-shutdown-grace must not be negative", "-doctor-interval must not be negative", "-shutdown-delay must not be negative",
		"-grpc-tls-cert and -grpc-tls-key go together", "-admin-tls-cert and -admin-tls-key go together",
		"-grpc-client-ca needs -grpc-tls-cert and -grpc-tls-key"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

// TestRunServes: the flags start the server, with the log they ask for,
// until the context ends.
func TestRunServes(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	adminAddr := freeAddr(t)
	var logs testkit.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"-config", cfg, "-grpc-addr", freeAddr(t), "-admin-addr", adminAddr, "-log-format", "json"}, io.Discard, &logs)
	}()
	eventually(t, func() error {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %d", resp.StatusCode)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `"msg":"serving"`) || !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Fatalf("no JSON log of serving and stopping:\n%s", logs.String())
	}
}
