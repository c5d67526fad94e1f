// Package tlsreload serves a listener's TLS from certificate files that may
// change under it: the certificate (chain) it presents, its key, and for
// mutual TLS the CA bundle a client's certificate must chain to. The files
// are read again on Reload and put in force when their content changed;
// every new connection takes the set in force, and a set that does not load
// (a key that does not fit, a file half written) is refused while the
// previous one stays.
package tlsreload

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
)

// File is one file of a listener's TLS.
type File struct {
	Path string
	// Label names the file in messages: the flag that set it, say
	// "-grpc-tls-cert".
	Label string
}

// Files are a listener's TLS files. Without a ClientCA path, clients
// present no certificate.
type Files struct {
	Cert, Key, ClientCA File
}

// Provider is a listener's TLS, kept in step with its files.
type Provider struct {
	// listener names it in logs and metrics ("gRPC", "admin").
	listener   string
	files      Files
	nextProtos []string
	log        *slog.Logger
	current    atomic.Pointer[tls.Config]
	// reloads and refused count changed file sets put in force and refused.
	reloads, refused atomic.Uint64
	last             [sha256.Size]byte // only Reload reads or writes it after Load
}

// Load reads the files and puts them in force for the listener named
// listener, which speaks the application protocols nextProtos (ALPN). An
// error names the file, by its label, and the reason.
func Load(listener string, files Files, nextProtos []string, log *slog.Logger) (*Provider, error) {
	p := &Provider{listener: listener, files: files, nextProtos: nextProtos, log: log}
	content, fp, err := p.read()
	if err != nil {
		return nil, err
	}
	cfg, err := p.parse(content, time.Now())
	if err != nil {
		return nil, err
	}
	p.current.Store(cfg)
	p.last = fp
	p.logInForce(p.listener+" TLS on", cfg)
	return p, nil
}

// Config is a server's TLS configuration that hands each new connection
// the set in force.
func (p *Provider) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return p.current.Load(), nil
		},
	}
}

// Listen wraps ln in TLS with the set in force (ln as it is when p is nil:
// TLS off).
func (p *Provider) Listen(ln net.Listener) net.Listener {
	if p == nil {
		return ln
	}
	return tls.NewListener(ln, p.Config())
}

// Listener names the listener ("gRPC", "admin").
func (p *Provider) Listener() string { return p.listener }

// NotAfter is when the certificate in force expires.
func (p *Provider) NotAfter() time.Time { return p.current.Load().Certificates[0].Leaf.NotAfter }

// Reloads counts changed file sets put in force.
func (p *Provider) Reloads() uint64 { return p.reloads.Load() }

// Refused counts changed file sets refused.
func (p *Provider) Refused() uint64 { return p.refused.Load() }

// Mode names the listener's security for the start-up log line:
// plaintext (p nil), TLS, or mutual TLS.
func (p *Provider) Mode() string {
	switch {
	case p == nil:
		return "plaintext"
	case p.files.ClientCA.Path != "":
		return "mutual TLS"
	}
	return "TLS"
}

// Reload puts the files in force if their content changed since the last
// look. A refused set is logged once, not at every call. Not safe for
// concurrent use: one goroutine reloads.
func (p *Provider) Reload() {
	if p == nil {
		return
	}
	content, fp, err := p.read()
	if fp == p.last {
		return
	}
	p.last = fp
	var cfg *tls.Config
	if err == nil {
		cfg, err = p.parse(content, time.Now())
	}
	if err != nil {
		p.refused.Add(1)
		p.log.Error(p.listener+" TLS files refused, the previous certificate stays in force", "error", err)
		return
	}
	p.reloads.Add(1)
	p.current.Store(cfg)
	p.logInForce(p.listener+" TLS files reloaded", cfg)
}

// content is what the certificate, key and CA files hold.
type content struct{ cert, key, ca []byte }

// read reads the files and fingerprints their content. A file that cannot be
// read is fingerprinted by its error, so the same failure is reported once.
func (p *Provider) read() (content, [sha256.Size]byte, error) {
	var c content
	var errs []error
	h := sha256.New()
	for _, file := range []struct {
		File
		into *[]byte
	}{
		{p.files.Cert, &c.cert},
		{p.files.Key, &c.key},
		{p.files.ClientCA, &c.ca},
	} {
		if file.Path == "" {
			continue
		}
		data, err := os.ReadFile(file.Path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file.Label, err))
			data = []byte(err.Error())
		} else {
			*file.into = data
		}
		// Length first: the content of one file cannot pass for another's.
		fmt.Fprintf(h, "%s %d\n", file.Label, len(data))
		h.Write(data)
	}
	return c, [sha256.Size]byte(h.Sum(nil)), errors.Join(errs...)
}

// parse builds the per-connection tls.Config from the files' content.
func (p *Provider) parse(c content, now time.Time) (*tls.Config, error) {
	cert, key, ca := p.files.Cert, p.files.Key, p.files.ClientCA
	chain, err := parseCertificates(c.cert)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", cert.Label, cert.Path, err)
	}
	if leaf := chain[0]; now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%s %s: the certificate expired at %s", cert.Label, cert.Path, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	pair, err := tls.X509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (certificate %s)", key.Label, key.Path, err, cert.Path)
	}
	pair.Leaf = chain[0] // the log reads it; GODEBUG x509keypairleaf=0 would leave it nil
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		NextProtos:   p.nextProtos,
		// A resumed session shows no certificate: Envoy resumes, so it
		// would keep the one from before a rotation on every new
		// connection. Envoy keeps its connections for long, so a full
		// handshake each time costs next to nothing.
		SessionTicketsDisabled: true,
	}
	if ca.Path != "" {
		cas, err := parseCertificates(c.ca)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", ca.Label, ca.Path, err)
		}
		pool := x509.NewCertPool()
		for _, root := range cas {
			pool.AddCert(root)
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

func (p *Provider) logInForce(msg string, cfg *tls.Config) {
	leaf := cfg.Certificates[0].Leaf
	attrs := []any{"cert", p.files.Cert.Path, "subject", leaf.Subject.String(), "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	if p.files.ClientCA.Path != "" {
		attrs = append(attrs, "client_ca", p.files.ClientCA.Path)
	}
	p.log.Info(msg, attrs...)
}
