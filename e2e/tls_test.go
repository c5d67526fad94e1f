package e2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// serviceName is the name the service's certificate carries and Envoy
// checks (opaque-mtls.yaml's sni and SAN matcher).
const serviceName = "envoy-affinity.internal"

// mtls is a stack whose Envoy talks to the service over mutual TLS.
type mtls struct {
	*launch.Stack
	ca      *launch.CA
	dir     string // the certificate files of both sides
	envoyID launch.Cert
}

// newMTLSStack runs envoy/opaque-mtls.yaml: the service presents a
// certificate of ca and takes clients of ca; Envoy presents envoyID and
// trusts ca. Envoy closes its connection to the service after half a second
// without a stream, so a test can make it open a new one.
func newMTLSStack(t *testing.T, ca *launch.CA, envoyID launch.Cert) *mtls {
	t.Helper()
	m := &mtls{ca: ca, dir: t.TempDir(), envoyID: envoyID}
	service, err := ca.Server(serviceName)
	if err != nil {
		t.Fatal(err)
	}
	m.writeServiceCert(t, service)
	for name, data := range map[string][]byte{"client.crt": envoyID.CertPEM, "client.key": envoyID.KeyPEM, "ca.crt": ca.PEM} {
		write(t, filepath.Join(m.dir, name), data)
	}
	yaml, err := os.ReadFile(envoyYAML("opaque-mtls.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const protocol = "        explicit_http_config:\n"
	const paths = "filename: /etc/envoy/tls/"
	if strings.Count(string(yaml), paths) != 3 || !strings.Contains(string(yaml), protocol) {
		t.Fatal("opaque-mtls.yaml: not three /etc/envoy/tls/ files, or no envoy_affinity protocol options to rewrite")
	}
	variant := strings.ReplaceAll(string(yaml), paths, "filename: "+m.dir+"/")
	variant = strings.Replace(variant, protocol, "        common_http_protocol_options: {idle_timeout: 0.5s}\n"+protocol, 1)
	path := filepath.Join(t.TempDir(), "opaque-mtls.yaml")
	write(t, path, []byte(variant))
	m.Stack = newStackWith(t, launch.Options{Mode: "opaque", EnvoyYAML: path, ServerArgs: []string{
		"-grpc-tls-cert", filepath.Join(m.dir, "service.crt"),
		"-grpc-tls-key", filepath.Join(m.dir, "service.key"),
		"-grpc-client-ca", filepath.Join(m.dir, "ca.crt"),
	}})
	return m
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writeServiceCert replaces the service's key and certificate files, one
// after the other, as a simple deployment script would.
func (m *mtls) writeServiceCert(t *testing.T, c launch.Cert) {
	t.Helper()
	write(t, filepath.Join(m.dir, "service.key"), c.KeyPEM)
	write(t, filepath.Join(m.dir, "service.crt"), c.CertPEM)
}

// servedSerial is the serial of the certificate the service presents on a
// new connection, seen with Envoy's client certificate.
func (m *mtls) servedSerial() (*big.Int, error) {
	pair, err := tls.X509KeyPair(m.envoyID.CertPEM, m.envoyID.KeyPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(m.ca.PEM)
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(m.GRPCPort), &tls.Config{
		RootCAs: roots, ServerName: serviceName, Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"},
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

func stat(t *testing.T, s *launch.Stack, name string) int {
	t.Helper()
	n, err := s.EnvoyStat(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// sessionOverMTLS starts a session and sends 10 more requests: the service
// decided each (a cookie naming the host that served, 11 ext_proc streams,
// none failed open), and the session stuck to its host.
func sessionOverMTLS(t *testing.T, s *launch.Stack) {
	t.Helper()
	started := stat(t, s, "http.ingress.ext_proc.streams_started")
	ss := startSessions(t, s, 1)[0]
	if ss.c.Cookie("affinity") == "" {
		t.Fatal("no session cookie: the service did not decide")
	}
	for i := 2; i <= 11; i++ {
		r, _, err := ss.c.Get("/")
		if err != nil || r.Host != ss.host || r.Count != i {
			t.Fatalf("request %d: %+v %v; want host %s count %d", i, r, err, ss.host, i)
		}
	}
	if n := stat(t, s, "http.ingress.ext_proc.streams_started") - started; n != 11 {
		t.Fatalf("11 requests: %d ext_proc streams, want 11", n)
	}
	if n := stat(t, s, "http.ingress.ext_proc.failure_mode_allowed"); n != 0 {
		t.Fatalf("%d requests failed open, want 0", n)
	}
}

// TestMTLSToService: Envoy (opaque-mtls.yaml) and the service speak mutual
// TLS; sessions work; after the service's certificate is rotated to a new
// one of the same CA, Envoy's next connection takes it and sessions go on.
func TestMTLSToService(t *testing.T) {
	t.Parallel()
	ca, err := launch.NewCA("envoy-affinity test CA")
	if err != nil {
		t.Fatal(err)
	}
	envoyID, err := ca.Client("envoy")
	if err != nil {
		t.Fatal(err)
	}
	m := newMTLSStack(t, ca, envoyID)
	sessionOverMTLS(t, m.Stack)
	if n := stat(t, m.Stack, "cluster.envoy_affinity.ssl.handshake"); n == 0 {
		t.Fatal("no TLS handshake with the service counted")
	}

	next, err := ca.Server(serviceName)
	if err != nil {
		t.Fatal(err)
	}
	m.writeServiceCert(t, next)
	ctx := context.Background()
	if err := launch.Eventually(ctx, 10*time.Second, func() error {
		got, err := m.servedSerial()
		if err == nil && got.Cmp(next.Serial) != 0 {
			err = fmt.Errorf("the service presents serial %x, want %x", got, next.Serial)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Envoy's connection from before the rotation closes when idle; the
	// next one is made with the new certificate.
	if err := launch.Eventually(ctx, 10*time.Second, func() error {
		if n := stat(t, m.Stack, "cluster.envoy_affinity.upstream_cx_active"); n != 0 {
			return fmt.Errorf("%d connections to the service still open", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	handshakes := stat(t, m.Stack, "cluster.envoy_affinity.ssl.handshake")
	sessionOverMTLS(t, m.Stack)
	if n := stat(t, m.Stack, "cluster.envoy_affinity.ssl.handshake"); n <= handshakes {
		t.Fatalf("no new TLS handshake after the rotation (%d before, %d after)", handshakes, n)
	}
	// Not resumed: Envoy saw and checked the new certificate.
	if n := stat(t, m.Stack, "cluster.envoy_affinity.ssl.session_reused"); n != 0 {
		t.Fatalf("%d TLS sessions resumed, want 0", n)
	}
}

// TestMTLSClientOfAnotherCA: an Envoy whose client certificate another CA
// signed gets no decision: the handshake fails, the ext_proc filter fails
// open, requests are still served, and no session cookie is set.
func TestMTLSClientOfAnotherCA(t *testing.T) {
	t.Parallel()
	ca, err := launch.NewCA("envoy-affinity test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := launch.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Client("envoy")
	if err != nil {
		t.Fatal(err)
	}
	m := newMTLSStack(t, ca, stranger)
	const requests = 5
	for i := range requests {
		c := launch.NewClient(m.URL(""))
		if _, _, err := c.Get("/"); err != nil {
			t.Fatalf("request %d not served: %v", i, err)
		}
		if ck := c.Cookie("affinity"); ck != "" {
			t.Fatalf("request %d got a session cookie %q", i, ck)
		}
	}
	if n := stat(t, m.Stack, "http.ingress.ext_proc.failure_mode_allowed"); n != requests {
		t.Fatalf("%d requests failed open, want %d", n, requests)
	}
}

// TestMTLSYAMLFollowsOpaque keeps opaque-mtls.yaml a copy of opaque.yaml
// plus the transport_socket of cluster envoy_affinity at its end, so the two
// cannot drift apart.
func TestMTLSYAMLFollowsOpaque(t *testing.T) {
	t.Parallel()
	body := func(name string) string {
		data, err := os.ReadFile(envoyYAML(name))
		if err != nil {
			t.Fatal(err)
		}
		_, b, ok := strings.Cut(string(data), "\nnode:")
		if !ok {
			t.Fatalf("%s has no node: line", name)
		}
		return b
	}
	opaque, mtls := body("opaque.yaml"), body("opaque-mtls.yaml")
	extra, ok := strings.CutPrefix(mtls, opaque)
	if !ok {
		t.Fatal("opaque-mtls.yaml differs from opaque.yaml before its transport_socket: copy opaque.yaml's changes over")
	}
	for _, line := range strings.Split(strings.TrimSuffix(extra, "\n"), "\n") {
		if !strings.HasPrefix(line, "    ") {
			t.Fatalf("opaque-mtls.yaml adds %q after the envoy_affinity cluster, outside it", line)
		}
	}
	if !strings.Contains(extra, "    transport_socket:\n") {
		t.Fatal("opaque-mtls.yaml adds no transport_socket")
	}
}

// TestJWKSOverTLS: with -admin-tls-cert, Envoy fetches the JWKS over TLS
// (the admin cluster's transport socket checks the service's certificate):
// for a service that does not run on Envoy's host. Established sessions are
// then verified and routed by Envoy alone.
func TestJWKSOverTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := launch.NewCA("admin CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Server(serviceName)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"admin.crt": cert.CertPEM, "admin.key": cert.KeyPEM, "ca.crt": ca.PEM} {
		write(t, filepath.Join(dir, name), data)
	}
	yaml, err := os.ReadFile(envoyYAML("verified.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const uri, cluster = "uri: http://127.0.0.1:9003/", "  - name: envoy_affinity_admin\n    type: STATIC\n    connect_timeout: 0.25s\n"
	if !strings.Contains(string(yaml), uri) || !strings.Contains(string(yaml), cluster) {
		t.Fatal("verified.yaml: no JWKS uri or admin cluster to rewrite")
	}
	variant := strings.Replace(string(yaml), uri, "uri: https://127.0.0.1:9003/", 1)
	variant = strings.Replace(variant, cluster, cluster+`    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: `+serviceName+`
        common_tls_context:
          validation_context:
            trusted_ca: {filename: `+filepath.Join(dir, "ca.crt")+`}
            match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: `+serviceName+`}}]
`, 1)
	path := filepath.Join(dir, "verified-jwks-tls.yaml")
	write(t, path, []byte(variant))
	s := newStackWith(t, launch.Options{Mode: "verified", EnvoyYAML: path, AdminCA: ca.PEM, AdminServerName: serviceName,
		ServerArgs: []string{"-admin-tls-cert", filepath.Join(dir, "admin.crt"), "-admin-tls-key", filepath.Join(dir, "admin.key")}})
	for _, ss := range startSessions(t, s, 3) {
		envoyAlone(t, s, ss, 5)
	}
	if n, _ := s.EnvoyStat("cluster.envoy_affinity_admin.ssl.handshake"); n == 0 {
		t.Fatal("Envoy made no TLS handshake with the admin listener")
	}
	resp, err := s.AdminClient().Get(s.ServerURL("/.well-known/jwks.json"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
