package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
	"github.com/envoy-affinity/envoy-affinity/internal/tlsreload"
)

// clientTLS is a client's config that trusts ca and presents cert (none
// when nil).
func clientTLS(t *testing.T, ca *launch.CA, cert *launch.Cert) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	cfg := &tls.Config{RootCAs: roots, ServerName: testkit.ServerName, NextProtos: []string{"h2"}}
	if cert != nil {
		pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// healthOver asks the gRPC health service over a new connection.
func healthOver(addr string, creds credentials.TransportCredentials) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if hr.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health %v", hr.Status)
	}
	return nil
}

// servedSerial opens a new TLS connection and returns the serial of the
// certificate the server presented.
func servedSerial(addr string, cfg *tls.Config) (*big.Int, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// serialIs is a condition for eventually: a new connection gets the
// certificate with serial want.
func serialIs(addr string, cfg *tls.Config, want *big.Int) func() error {
	return func() error {
		got, err := servedSerial(addr, cfg)
		if err == nil && got.Cmp(want) != 0 {
			err = fmt.Errorf("served serial %x, want %x", got, want)
		}
		return err
	}
}

// tlsRun is the server of a TLS test.
type tlsRun struct {
	grpcAddr, adminAddr, config string
	port                        int // of the pool's one host, changed by passChecks
}

func startTLSRun(t *testing.T, out io.Writer, files tlsreload.Files) *tlsRun {
	t.Helper()
	dir := t.TempDir()
	r := &tlsRun{config: filepath.Join(dir, "config.yaml"), port: 8081}
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, r.config, config("127.0.0.1:8081"))
	s := settings(r.config)
	s.ReloadInterval, s.GRPCTLS = 20*time.Millisecond, files
	r.grpcAddr, r.adminAddr = startRun(t, out, s)
	return r
}

// passChecks returns once the reload loop has checked the files again after
// anything logged so far: the config file is changed three times, each
// change awaited, and the loop checks the TLS files at each of its turns.
func (r *tlsRun) passChecks(t *testing.T) {
	t.Helper()
	for range 3 {
		r.port++
		host := fmt.Sprintf("127.0.0.1:%d", r.port)
		writeFile(t, r.config, config(host))
		eventually(t, poolIs(r.adminAddr, host))
	}
}

// TestRunTLSClients: who gets an answer from the gRPC listener, with TLS
// and with mutual TLS.
func TestRunTLSClients(t *testing.T) {
	issue := testkit.MustCert(t)
	f := testkit.NewTLSFiles(t)
	other, err := launch.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	strangerCert := issue(other.Client("envoy"))
	tls11 := clientTLS(t, f.CA, &f.Client)
	tls11.MinVersion, tls11.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	clients := []struct {
		name  string
		creds credentials.TransportCredentials
		// whether the call succeeds with mutual TLS and with TLS alone
		mutual, tlsOnly bool
	}{
		{"client certificate of the CA", credentials.NewTLS(clientTLS(t, f.CA, &f.Client)), true, true},
		{"no client certificate", credentials.NewTLS(clientTLS(t, f.CA, nil)), false, true},
		{"client certificate of another CA", credentials.NewTLS(clientTLS(t, f.CA, &strangerCert)), false, true},
		{"client that does not trust the server", credentials.NewTLS(clientTLS(t, other, &f.Client)), false, false},
		{"TLS 1.1 at most", credentials.NewTLS(tls11), false, false},
		{"plaintext", insecure.NewCredentials(), false, false},
	}
	setups := []struct {
		name  string
		files tlsreload.Files
		log   string // the start-up line's word for it
	}{
		{"mutual TLS", grpcTLS(f.Cert, f.Key, f.CAFile), `grpc_security="mutual TLS"`},
		{"TLS", grpcTLS(f.Cert, f.Key, ""), "grpc_security=TLS "},
	}
	for _, setup := range setups {
		t.Run(setup.name, func(t *testing.T) {
			var logs testkit.SyncBuffer
			addr := startTLSRun(t, &logs, setup.files).grpcAddr
			// Up once the right client gets an answer.
			eventually(t, func() error { return healthOver(addr, credentials.NewTLS(clientTLS(t, f.CA, &f.Client))) })
			eventually(t, func() error {
				if !strings.Contains(logs.String(), setup.log) {
					return fmt.Errorf("the start-up log lacks %s:\n%s", setup.log, logs.String())
				}
				return nil
			})
			for _, c := range clients {
				want := c.tlsOnly
				if setup.name == "mutual TLS" {
					want = c.mutual
				}
				err := healthOver(addr, c.creds)
				if want && err != nil {
					t.Errorf("%s: refused: %v", c.name, err)
				}
				if !want && err == nil {
					t.Errorf("%s: answered", c.name)
				}
			}
		})
	}
}

// linkedFiles keeps the service's files as Kubernetes mounts a Secret:
// tls.crt, tls.key and ca.crt are links into a folder that one rename
// replaces, so a rotation changes all of them at once.
type linkedFiles struct {
	t          *testing.T
	dir        string
	generation int
}

func newLinkedFiles(t *testing.T) *linkedFiles {
	l := &linkedFiles{t: t, dir: t.TempDir()}
	for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(l.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func (l *linkedFiles) path(name string) string { return filepath.Join(l.dir, name) }

// put makes cert, key and ca the files' content; a nil one is left out.
func (l *linkedFiles) put(cert, key, ca []byte) {
	l.t.Helper()
	l.generation++
	gen := fmt.Sprintf("..gen%d", l.generation)
	if err := os.Mkdir(filepath.Join(l.dir, gen), 0o700); err != nil {
		l.t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": ca} {
		if data != nil {
			writeFile(l.t, filepath.Join(l.dir, gen, name), string(data))
		}
	}
	tmp := filepath.Join(l.dir, "..data.tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, "..data")); err != nil {
		l.t.Fatal(err)
	}
}

// TestRunTLSRotation: new certificate files are in force for the next
// connection without a restart; a bad set is refused, logged once, and the
// certificate in force stays.
func TestRunTLSRotation(t *testing.T) {
	issue := testkit.MustCert(t)
	f := testkit.NewTLSFiles(t)
	links := newLinkedFiles(t)
	links.put(f.Server.CertPEM, f.Server.KeyPEM, f.CA.PEM)
	cert, key, ca := links.path("tls.crt"), links.path("tls.key"), links.path("ca.crt")
	var logs testkit.SyncBuffer
	run := startTLSRun(t, &logs, grpcTLS(cert, key, ca))
	addr := run.grpcAddr
	client := clientTLS(t, f.CA, &f.Client)
	// A client that would resume its session, as Envoy does: a resumed
	// connection would show the certificate from before the rotation.
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	eventually(t, serialIs(addr, client, f.Server.Serial))

	// Rotation: the next connection gets the new certificate.
	second := issue(f.CA.Server(testkit.ServerName))
	links.put(second.CertPEM, second.KeyPEM, f.CA.PEM)
	eventually(t, serialIs(addr, client, second.Serial))
	if err := healthOver(addr, credentials.NewTLS(client)); err != nil {
		t.Fatal(err)
	}

	third := issue(f.CA.Server(testkit.ServerName))
	expired := issue(f.CA.Expired(testkit.ServerName))
	bad := []struct {
		name          string
		cert, key, ca []byte
		reason        string
	}{
		{"key of another certificate", third.CertPEM, second.KeyPEM, f.CA.PEM,
			"-grpc-tls-key " + key + ": tls: private key does not match public key (certificate " + cert + ")"},
		{"certificate cut short", third.CertPEM[:len(third.CertPEM)/2], third.KeyPEM, f.CA.PEM,
			"-grpc-tls-cert " + cert + ": a PEM block is cut short"},
		{"expired certificate", expired.CertPEM, expired.KeyPEM, f.CA.PEM,
			"-grpc-tls-cert " + cert + ": the certificate expired at"},
		{"key file gone", third.CertPEM, nil, f.CA.PEM,
			"-grpc-tls-key: open " + key + ": no such file or directory"},
		{"CA bundle cut short", third.CertPEM, third.KeyPEM, f.CA.PEM[:len(f.CA.PEM)-40],
			"-grpc-client-ca " + ca + ": a PEM block is cut short"},
	}
	for i, b := range bad {
		links.put(b.cert, b.key, b.ca)
		eventually(t, func() error {
			if !strings.Contains(logs.String(), b.reason) {
				return fmt.Errorf("%s: no %q in the log:\n%s", b.name, b.reason, logs.String())
			}
			return nil
		})
		// The certificate in force stays, and so does the client check.
		if err := serialIs(addr, client, second.Serial)(); err != nil {
			t.Fatalf("after %s: %v", b.name, err)
		}
		if err := healthOver(addr, credentials.NewTLS(clientTLS(t, f.CA, nil))); err == nil {
			t.Fatalf("after %s: a client without a certificate was answered", b.name)
		}
		if n := strings.Count(logs.String(), "gRPC TLS files refused"); n != i+1 {
			t.Fatalf("after %s: %d refusals logged, want %d (one per change)", b.name, n, i+1)
		}
	}
	// Checked again, unchanged: not logged again.
	run.passChecks(t)
	if n := strings.Count(logs.String(), "gRPC TLS files refused"); n != len(bad) {
		t.Fatalf("%d refusals logged, want %d (one per change)", n, len(bad))
	}

	// Put right: the next good set is taken, once.
	links.put(third.CertPEM, third.KeyPEM, f.CA.PEM)
	eventually(t, serialIs(addr, client, third.Serial))
	run.passChecks(t)
	if n := strings.Count(logs.String(), "gRPC TLS files refused"); n != len(bad) {
		t.Fatalf("%d refusals logged, want %d (one per change)", n, len(bad))
	}
	if n := strings.Count(logs.String(), "gRPC TLS files reloaded"); n != 2 {
		t.Fatalf("%d reloads logged, want 2:\n%s", n, logs.String())
	}
	// The same counts in the metrics, and the expiry of the one in force.
	resp, err := http.Get("http://" + run.adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	block, _ := pem.Decode(third.CertPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		`envoy_affinity_tls_reloads_total{listener="grpc"}`:                        2,
		`envoy_affinity_tls_reload_errors_total{listener="grpc"}`:                  float64(len(bad)),
		`envoy_affinity_tls_certificate_expiry_timestamp_seconds{listener="grpc"}`: float64(leaf.NotAfter.Unix()),
	} {
		if got := metricValue(string(body), name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// metricValue reads a metric's value from Prometheus text, name with its
// labels as Prometheus writes them (-1 when absent).
func metricValue(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// TestRunTLSOnSIGHUP: with an hour between checks, the signal brings a new
// certificate in at once.
func TestRunTLSOnSIGHUP(t *testing.T) {
	issue := testkit.MustCert(t)
	f := testkit.NewTLSFiles(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	var logs testkit.SyncBuffer
	s := settings(cfg)
	s.ReloadInterval, s.GRPCTLS = time.Hour, grpcTLS(f.Cert, f.Key, "")
	addr, _ := startRun(t, &logs, s)
	client := clientTLS(t, f.CA, nil)
	eventually(t, serialIs(addr, client, f.Server.Serial))
	// SIGHUP is caught from the "serving" line on; before, it would end the test binary.
	eventually(t, serving(&logs))
	next := issue(f.CA.Server(testkit.ServerName))
	writeFile(t, f.Key, string(next.KeyPEM))
	writeFile(t, f.Cert, string(next.CertPEM))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, serialIs(addr, client, next.Serial))
}

// TestRunAdminTLS: with -admin-tls-cert the admin listener (the JWKS Envoy
// fetches, the token, drains) speaks only TLS, and a new certificate is in
// force for the next connection, as on the gRPC listener; a plain HTTP
// client gets nothing.
func TestRunAdminTLS(t *testing.T) {
	issue := testkit.MustCert(t)
	f := testkit.NewTLSFiles(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	var logs testkit.SyncBuffer
	s := settings(cfg)
	s.ReloadInterval = 20 * time.Millisecond
	s.AdminTLS.Cert.Path, s.AdminTLS.Key.Path = f.Cert, f.Key
	s.GRPCAddr, s.AdminAddr = freeAddr(t), freeAddr(t)
	adminAddr := s.AdminAddr
	runUntilCleanup(t, &logs, s)
	tlsCfg := clientTLS(t, f.CA, nil)
	tlsCfg.NextProtos = nil
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	eventually(t, func() error {
		resp, err := client.Get("https://" + adminAddr + "/.well-known/jwks.json")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("JWKS over TLS: %d", resp.StatusCode)
		}
		return nil
	})
	if resp, err := http.Get("http://" + adminAddr + "/healthz"); err == nil && resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		t.Fatal("the admin listener answered plain HTTP")
	}
	if !strings.Contains(logs.String(), "admin TLS on") || !strings.Contains(logs.String(), "admin_security=TLS") {
		t.Fatalf("no admin TLS in the log:\n%s", logs.String())
	}
	// Rotated in place: the next connection gets the new certificate.
	next := issue(f.CA.Server(testkit.ServerName))
	writeFile(t, f.Key, string(next.KeyPEM))
	writeFile(t, f.Cert, string(next.CertPEM))
	eventually(t, serialIs(adminAddr, tlsCfg, next.Serial))
	eventually(t, func() error {
		if !strings.Contains(logs.String(), "admin TLS files reloaded") {
			return fmt.Errorf("the rotation is not logged")
		}
		return nil
	})
}
