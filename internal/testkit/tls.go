package testkit

import (
	"path/filepath"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// ServerName is the DNS name in the test server certificates.
const ServerName = "envoy-affinity.internal"

// TLSFiles is a CA, a server and a client certificate it issued, and the
// server's certificate, key and the CA bundle written as files into Dir.
type TLSFiles struct {
	Dir            string
	CA             *launch.CA
	Server, Client launch.Cert
	// Cert, Key and CAFile are the files a listener's flags name.
	Cert, Key, CAFile string
}

// NewTLSFiles issues the certificates and writes the files into a folder
// of the test's.
func NewTLSFiles(t *testing.T) *TLSFiles {
	t.Helper()
	issue := MustCert(t)
	f := &TLSFiles{Dir: t.TempDir()}
	var err error
	if f.CA, err = launch.NewCA("test CA"); err != nil {
		t.Fatal(err)
	}
	f.Server = issue(f.CA.Server(ServerName))
	f.Client = issue(f.CA.Client("envoy"))
	f.Cert, f.Key, f.CAFile = filepath.Join(f.Dir, "tls.crt"), filepath.Join(f.Dir, "tls.key"), filepath.Join(f.Dir, "ca.crt")
	WriteFile(t, f.Cert, string(f.Server.CertPEM))
	WriteFile(t, f.Key, string(f.Server.KeyPEM))
	WriteFile(t, f.CAFile, string(f.CA.PEM))
	return f
}

// MustCert returns a function that passes an issued certificate through
// and fails t on an error, so that a call reads issue(ca.Server(name)).
func MustCert(t *testing.T) func(launch.Cert, error) launch.Cert {
	return func(c launch.Cert, err error) launch.Cert {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// NewDNSServer starts a loopback DNS server for the test's duration.
func NewDNSServer(t *testing.T) *launch.DNSServer {
	t.Helper()
	s, err := launch.NewDNSServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
