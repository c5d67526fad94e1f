package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
)

// TestRunTLSRefusesBadFiles: TLS flags and files that cannot work stop the
// start with the flag, the file and the reason.
func TestRunTLSRefusesBadFiles(t *testing.T) {
	issue := testkit.MustCert(t)
	f := testkit.NewTLSFiles(t)
	cfg := filepath.Join(f.Dir, "config.yaml")
	writeFile(t, filepath.Join(f.Dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, config("127.0.0.1:8081"))
	other := issue(f.CA.Server(testkit.ServerName))
	expired := issue(f.CA.Expired(testkit.ServerName))
	file := func(name string, data []byte) string {
		p := filepath.Join(f.Dir, name)
		writeFile(t, p, string(data))
		return p
	}
	otherKey := file("other.key", other.KeyPEM)
	notPEM := file("not.pem", []byte("certificate goes here\n"))
	cutShort := file("cut.crt", f.Server.CertPEM[:len(f.Server.CertPEM)-30])
	expiredCert, expiredKey := file("expired.crt", expired.CertPEM), file("expired.key", expired.KeyPEM)
	missing := filepath.Join(f.Dir, "nope.crt")
	tests := []struct {
		name  string
		flags []string
		want  []string
	}{
		{"certificate without key", []string{"-grpc-tls-cert", f.Cert}, []string{"-grpc-tls-cert and -grpc-tls-key go together"}},
		{"key without certificate", []string{"-grpc-tls-key", f.Key}, []string{"-grpc-tls-cert and -grpc-tls-key go together"}},
		{"client CA alone", []string{"-grpc-client-ca", f.CAFile},
			[]string{"-grpc-client-ca needs -grpc-tls-cert and -grpc-tls-key"}},
		{"missing certificate file", []string{"-grpc-tls-cert", missing, "-grpc-tls-key", f.Key},
			[]string{"-grpc-tls-cert: open " + missing + ": no such file or directory"}},
		{"missing files are all named", []string{"-grpc-tls-cert", missing, "-grpc-tls-key", missing + ".key", "-grpc-client-ca", missing + ".ca"},
			[]string{"open " + missing + ":", "open " + missing + ".key:", "open " + missing + ".ca:"}},
		{"key of another certificate", []string{"-grpc-tls-cert", f.Cert, "-grpc-tls-key", otherKey},
			[]string{"-grpc-tls-key " + otherKey + ": tls: private key does not match public key (certificate " + f.Cert + ")"}},
		{"certificate file without PEM", []string{"-grpc-tls-cert", notPEM, "-grpc-tls-key", f.Key},
			[]string{"-grpc-tls-cert " + notPEM + ": no PEM certificate in the file"}},
		{"key file holds a certificate", []string{"-grpc-tls-cert", f.Cert, "-grpc-tls-key", f.Cert},
			[]string{"-grpc-tls-key " + f.Cert + ": tls: found a certificate rather than a key"}},
		{"certificate cut short", []string{"-grpc-tls-cert", cutShort, "-grpc-tls-key", f.Key},
			[]string{"-grpc-tls-cert " + cutShort + ": a PEM block is cut short"}},
		{"expired certificate", []string{"-grpc-tls-cert", expiredCert, "-grpc-tls-key", expiredKey},
			[]string{"-grpc-tls-cert " + expiredCert + ": the certificate expired at"}},
		{"client CA file holds a key", []string{"-grpc-tls-cert", f.Cert, "-grpc-tls-key", f.Key, "-grpc-client-ca", f.Key},
			[]string{"-grpc-client-ca " + f.Key + ": no PEM certificate in the file"}},
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
