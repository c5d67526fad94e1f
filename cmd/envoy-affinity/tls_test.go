package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// serverName is the DNS name in the test server certificates.
const serverName = "envoy-affinity.internal"

// tlsFixture is a CA, a server certificate it issued, and the files the
// flags name.
type tlsFixture struct {
	dir    string
	ca     *launch.CA
	server launch.Cert
	// The certificate, key and CA bundle files.
	cert, key, caFile string
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	f := &tlsFixture{dir: t.TempDir()}
	var err error
	if f.ca, err = launch.NewCA("test CA"); err != nil {
		t.Fatal(err)
	}
	f.server = mustCert(t)(f.ca.Server(serverName))
	f.cert, f.key, f.caFile = filepath.Join(f.dir, "tls.crt"), filepath.Join(f.dir, "tls.key"), filepath.Join(f.dir, "ca.crt")
	writeFile(t, f.cert, string(f.server.CertPEM))
	writeFile(t, f.key, string(f.server.KeyPEM))
	writeFile(t, f.caFile, string(f.ca.PEM))
	return f
}

// mustCert returns a function that passes an issued certificate through
// and fails t on an error, so that a call reads issue(ca.Server(name)).
func mustCert(t *testing.T) func(launch.Cert, error) launch.Cert {
	return func(c launch.Cert, err error) launch.Cert {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// TestRunTLSRefusesBadFiles: TLS flags and files that cannot work stop the
// start with the flag, the file and the reason.
func TestRunTLSRefusesBadFiles(t *testing.T) {
	issue := mustCert(t)
	f := newTLSFixture(t)
	cfg := filepath.Join(f.dir, "config.yaml")
	writeFile(t, filepath.Join(f.dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	other := issue(f.ca.Server(serverName))
	expired := issue(f.ca.Expired(serverName))
	file := func(name string, data []byte) string {
		p := filepath.Join(f.dir, name)
		writeFile(t, p, string(data))
		return p
	}
	otherKey := file("other.key", other.KeyPEM)
	notPEM := file("not.pem", []byte("certificate goes here\n"))
	cutShort := file("cut.crt", f.server.CertPEM[:len(f.server.CertPEM)-30])
	expiredCert, expiredKey := file("expired.crt", expired.CertPEM), file("expired.key", expired.KeyPEM)
	missing := filepath.Join(f.dir, "nope.crt")
	tests := []struct {
		name  string
		flags []string
		want  []string
	}{
		{"certificate without key", []string{"-grpc-tls-cert", f.cert}, []string{"-grpc-tls-cert and -grpc-tls-key go together"}},
		{"key without certificate", []string{"-grpc-tls-key", f.key}, []string{"-grpc-tls-cert and -grpc-tls-key go together"}},
		{"client CA alone", []string{"-grpc-client-ca", f.caFile},
			[]string{"-grpc-client-ca needs -grpc-tls-cert and -grpc-tls-key"}},
		{"missing certificate file", []string{"-grpc-tls-cert", missing, "-grpc-tls-key", f.key},
			[]string{"-grpc-tls-cert: open " + missing + ": no such file or directory"}},
		{"missing files are all named", []string{"-grpc-tls-cert", missing, "-grpc-tls-key", missing + ".key", "-grpc-client-ca", missing + ".ca"},
			[]string{"open " + missing + ":", "open " + missing + ".key:", "open " + missing + ".ca:"}},
		{"key of another certificate", []string{"-grpc-tls-cert", f.cert, "-grpc-tls-key", otherKey},
			[]string{"-grpc-tls-key " + otherKey + ": tls: private key does not match public key (certificate " + f.cert + ")"}},
		{"certificate file without PEM", []string{"-grpc-tls-cert", notPEM, "-grpc-tls-key", f.key},
			[]string{"-grpc-tls-cert " + notPEM + ": no PEM certificate in the file"}},
		{"key file holds a certificate", []string{"-grpc-tls-cert", f.cert, "-grpc-tls-key", f.cert},
			[]string{"-grpc-tls-key " + f.cert + ": tls: found a certificate rather than a key"}},
		{"certificate cut short", []string{"-grpc-tls-cert", cutShort, "-grpc-tls-key", f.key},
			[]string{"-grpc-tls-cert " + cutShort + ": a PEM block is cut short"}},
		{"expired certificate", []string{"-grpc-tls-cert", expiredCert, "-grpc-tls-key", expiredKey},
			[]string{"-grpc-tls-cert " + expiredCert + ": the certificate expired at"}},
		{"client CA file holds a key", []string{"-grpc-tls-cert", f.cert, "-grpc-tls-key", f.key, "-grpc-client-ca", f.key},
			[]string{"-grpc-client-ca " + f.key + ": no PEM certificate in the file"}},
	}
	// Cancelled from the start: a set of flags wrongly accepted makes Run
	// return at once instead of serving.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			args := append([]string{"-config", cfg, "-grpc-addr", "127.0.0.1:0", "-admin-addr", ""}, tt.flags...)
			err := Run(ctx, args, &out, &out)
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
