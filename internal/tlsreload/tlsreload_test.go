package tlsreload

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
)

func mustCert(t *testing.T) func(launch.Cert, error) launch.Cert {
	return func(c launch.Cert, err error) launch.Cert {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

func notAfter(t *testing.T, c launch.Cert) int64 {
	t.Helper()
	block, _ := pem.Decode(c.CertPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf.NotAfter.Unix()
}

// TestReload: a changed set is put in force and counted once; a set that
// does not load is refused, logged and counted once, and the set in force
// stays.
func TestReload(t *testing.T) {
	issue := mustCert(t)
	ca, err := launch.NewCA("tlsreload test CA")
	if err != nil {
		t.Fatal(err)
	}
	first, second := issue(ca.Server("a.internal")), issue(ca.Server("a.internal"))
	dir := t.TempDir()
	files := Files{Cert: File{filepath.Join(dir, "tls.crt"), "-x-cert"}, Key: File{filepath.Join(dir, "tls.key"), "-x-key"},
		ClientCA: File{filepath.Join(dir, "ca.crt"), "-x-ca"}}
	put := func(cert, key []byte) {
		testkit.WriteFile(t, files.Key.Path, string(key))
		testkit.WriteFile(t, files.Cert.Path, string(cert))
	}
	put(first.CertPEM, first.KeyPEM)
	testkit.WriteFile(t, files.ClientCA.Path, string(ca.PEM))
	var logs testkit.SyncBuffer
	p, err := Load("X", files, []string{"h2"}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode() != "mutual TLS" || p.Listener() != "X" || p.NotAfter().Unix() != notAfter(t, first) || !strings.Contains(logs.String(), "X TLS on") {
		t.Fatalf("loaded: %s %s %v\n%s", p.Mode(), p.Listener(), p.NotAfter(), logs.String())
	}

	p.Reload() // unchanged
	put(second.CertPEM, second.KeyPEM)
	p.Reload()
	p.Reload()
	if p.Reloads() != 1 || p.Refused() != 0 || p.NotAfter().Unix() != notAfter(t, second) {
		t.Fatalf("after a rotation: %d reloads, %d refused", p.Reloads(), p.Refused())
	}

	put(first.CertPEM, second.KeyPEM)
	p.Reload()
	p.Reload()
	const reason = "-x-key " // the label names the file
	if p.Reloads() != 1 || p.Refused() != 1 || strings.Count(logs.String(), "X TLS files refused") != 1 || !strings.Contains(logs.String(), reason) {
		t.Fatalf("after a bad set: %d reloads, %d refused:\n%s", p.Reloads(), p.Refused(), logs.String())
	}
	if p.NotAfter().Unix() != notAfter(t, second) {
		t.Fatal("a refused set replaced the one in force")
	}
}

// TestLoadNamesLabels: an error names the file by its label.
func TestLoadNamesLabels(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.crt")
	_, err := Load("X", Files{Cert: File{missing, "-x-cert"}, Key: File{missing + ".key", "-x-key"}}, nil, slog.New(slog.DiscardHandler))
	for _, want := range []string{"-x-cert: open " + missing + ":", "-x-key: open " + missing + ".key:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// TestOff: a nil Provider is TLS off: plaintext, its listener as it is.
func TestOff(t *testing.T) {
	var p *Provider
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p.Reload()
	if p.Mode() != "plaintext" || p.Listen(ln) != ln {
		t.Fatal("a nil Provider is not TLS off")
	}
}

// TestServes: a connection gets the certificate in force, and TLS 1.1 is
// refused.
func TestServes(t *testing.T) {
	issue := mustCert(t)
	ca, err := launch.NewCA("tlsreload test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert := issue(ca.Server("a.internal"))
	dir := t.TempDir()
	files := Files{Cert: File{filepath.Join(dir, "tls.crt"), "-x-cert"}, Key: File{filepath.Join(dir, "tls.key"), "-x-key"}}
	testkit.WriteFile(t, files.Cert.Path, string(cert.CertPEM))
	testkit.WriteFile(t, files.Key.Path, string(cert.KeyPEM))
	p, err := Load("X", files, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln := p.Listen(ln)
	defer tln.Close()
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "a.internal"})
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(cert.Serial) != 0 {
		t.Errorf("served serial %x, want %x", got, cert.Serial)
	}
	conn.Close()
	if conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "a.internal", MaxVersion: tls.VersionTLS11}); err == nil {
		conn.Close()
		t.Error("TLS 1.1 answered")
	}
}
