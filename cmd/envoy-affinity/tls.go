package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// serverTLS is a listener's TLS (the gRPC one's or the admin one's): the
// certificate it presents and, for mutual TLS, the CA bundle a client's
// certificate must chain to. The files are re-read when their content
// changes; every new connection takes the set in force, and a set that does
// not load (a key that does not fit, a file half written) is refused while
// the previous one stays.
type serverTLS struct {
	// listener names it in logs and metrics ("gRPC", "admin"); the flags
	// name its files in errors.
	listener                  string
	certFlag, keyFlag, caFlag string
	certFile, keyFile, caFile string
	nextProtos                []string
	log                       *slog.Logger
	current                   atomic.Pointer[tls.Config]
	// reloads and refused count changed file sets put in force and refused.
	reloads, refused atomic.Uint64
	last             [sha256.Size]byte // only the reload goroutine reads or writes it after start
}

// newServerTLS loads the gRPC listener's files the flags name: nil when TLS
// is off, an error naming the file and the reason when they do not load.
func newServerTLS(o options, log *slog.Logger) (*serverTLS, error) {
	if o.tlsCert == "" {
		return nil, nil
	}
	// gRPC clients insist on ALPN h2.
	return loadServerTLS(&serverTLS{listener: "gRPC", certFlag: "-grpc-tls-cert", keyFlag: "-grpc-tls-key", caFlag: "-grpc-client-ca",
		certFile: o.tlsCert, keyFile: o.tlsKey, caFile: o.clientCA, nextProtos: []string{"h2"}, log: log})
}

// newAdminTLS loads the admin listener's files: nil when TLS is off.
func newAdminTLS(o options, log *slog.Logger) (*serverTLS, error) {
	if o.adminTLSCert == "" {
		return nil, nil
	}
	return loadServerTLS(&serverTLS{listener: "admin", certFlag: "-admin-tls-cert", keyFlag: "-admin-tls-key",
		certFile: o.adminTLSCert, keyFile: o.adminTLSKey, nextProtos: []string{"http/1.1"}, log: log})
}

func loadServerTLS(s *serverTLS) (*serverTLS, error) {
	files, fp, err := s.read()
	if err != nil {
		return nil, err
	}
	cfg, err := s.parse(files, time.Now())
	if err != nil {
		return nil, err
	}
	s.current.Store(cfg)
	s.last = fp
	s.logInForce(s.listener+" TLS on", cfg)
	return s, nil
}

// listen wraps an admin listener in TLS with the set in force (ln as it is
// when TLS is off).
func (s *serverTLS) listen(ln net.Listener) net.Listener {
	if s == nil {
		return ln
	}
	return tls.NewListener(ln, &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load(), nil
		},
	})
}

// serverOptions are the gRPC server options that turn TLS on (none when it
// is off).
func (s *serverTLS) serverOptions() []grpc.ServerOption {
	if s == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load(), nil
		},
	}))}
}

// notAfter is when the certificate in force expires.
func (s *serverTLS) notAfter() time.Time { return s.current.Load().Certificates[0].Leaf.NotAfter }

// mode names the listener's security for the start-up log line.
func (s *serverTLS) mode() string {
	switch {
	case s == nil:
		return "plaintext"
	case s.caFile != "":
		return "mutual TLS"
	}
	return "TLS"
}

// check puts the files in force if their content changed since the last
// look. A refused set is logged once, not at every check.
func (s *serverTLS) check() {
	if s == nil {
		return
	}
	files, fp, err := s.read()
	if fp == s.last {
		return
	}
	s.last = fp
	var cfg *tls.Config
	if err == nil {
		cfg, err = s.parse(files, time.Now())
	}
	if err != nil {
		s.refused.Add(1)
		s.log.Error(s.listener+" TLS files refused, the previous certificate stays in force", "error", err)
		return
	}
	s.reloads.Add(1)
	s.current.Store(cfg)
	s.logInForce(s.listener+" TLS files reloaded", cfg)
}

// tlsFiles is the content of the certificate, key and CA files.
type tlsFiles struct{ cert, key, ca []byte }

// read reads the files and fingerprints their content. A file that cannot be
// read is fingerprinted by its error, so the same failure is reported once.
func (s *serverTLS) read() (tlsFiles, [sha256.Size]byte, error) {
	var f tlsFiles
	var errs []error
	h := sha256.New()
	for _, file := range []struct {
		flag, path string
		into       *[]byte
	}{
		{s.certFlag, s.certFile, &f.cert},
		{s.keyFlag, s.keyFile, &f.key},
		{s.caFlag, s.caFile, &f.ca},
	} {
		if file.path == "" {
			continue
		}
		data, err := os.ReadFile(file.path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file.flag, err))
			data = []byte(err.Error())
		} else {
			*file.into = data
		}
		// Length first: the content of one file cannot pass for another's.
		fmt.Fprintf(h, "%s %d\n", file.flag, len(data))
		h.Write(data)
	}
	return f, [sha256.Size]byte(h.Sum(nil)), errors.Join(errs...)
}

// parse builds the per-connection tls.Config from the files' content.
func (s *serverTLS) parse(f tlsFiles, now time.Time) (*tls.Config, error) {
	chain, err := parseCertificates(f.cert)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", s.certFlag, s.certFile, err)
	}
	if leaf := chain[0]; now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%s %s: the certificate expired at %s", s.certFlag, s.certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	pair, err := tls.X509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (certificate %s)", s.keyFlag, s.keyFile, err, s.certFile)
	}
	pair.Leaf = chain[0] // the log reads it; GODEBUG x509keypairleaf=0 would leave it nil
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		NextProtos:   s.nextProtos,
		// A resumed session shows no certificate: Envoy resumes, so it
		// would keep the one from before a rotation on every new
		// connection. Envoy keeps its connections for long, so a full
		// handshake each time costs next to nothing.
		SessionTicketsDisabled: true,
	}
	if s.caFile != "" {
		cas, err := parseCertificates(f.ca)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", s.caFlag, s.caFile, err)
		}
		pool := x509.NewCertPool()
		for _, ca := range cas {
			pool.AddCert(ca)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// parseCertificates reads every CERTIFICATE block of a PEM file (other
// blocks, such as a key kept in the same file, are skipped). pem.Decode
// passes over a block it cannot read, so the blocks are counted: one cut
// short, as in a file still being written, is an error rather than silently
// left out.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	blocks, rest := 0, data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		blocks++
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if bytes.Count(data, []byte("-----BEGIN ")) != blocks {
		return nil, errors.New("a PEM block is cut short or malformed")
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in the file")
	}
	return certs, nil
}

func (s *serverTLS) logInForce(msg string, cfg *tls.Config) {
	leaf := cfg.Certificates[0].Leaf
	attrs := []any{"cert", s.certFile, "subject", leaf.Subject.String(), "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	if s.caFile != "" {
		attrs = append(attrs, "client_ca", s.caFile)
	}
	s.log.Info(msg, attrs...)
}
