package redisstore

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// clientOption turns the configuration into rueidis's, reading the
// credential and TLS files.
func clientOption(cfg affinity.RedisConfig) (rueidis.ClientOption, error) {
	opt := rueidis.ClientOption{
		InitAddress: cfg.Addresses,
		Username:    cfg.Username,
		SelectDB:    cfg.DB,
		ClientName:  "envoy-affinity",
		// A write that cannot be sent within this fails instead of
		// waiting for the kernel's TCP timeout.
		ConnWriteTimeout: max(time.Second, 10*cfg.Timeout),
		Dialer:           netDialer(cfg.Timeout),
	}
	switch cfg.Mode {
	case affinity.RedisSingle:
		opt.ForceSingleClient = true
	case affinity.RedisSentinel:
		opt.Sentinel = rueidis.SentinelOption{MasterSet: cfg.MasterName}
	}
	if cfg.UsernameFile != "" {
		u, err := readSecret(cfg.UsernameFile, "username_file")
		if err != nil {
			return opt, err
		}
		opt.Username = u
	}
	if cfg.PasswordFile != "" {
		p, err := readSecret(cfg.PasswordFile, "password_file")
		if err != nil {
			return opt, err
		}
		opt.Password = p
	}
	if cfg.TLS != nil {
		tc, err := tlsConfig(cfg.TLS)
		if err != nil {
			return opt, err
		}
		opt.TLSConfig = tc
	}
	// Sentinels take the same credentials and TLS as the servers.
	opt.Sentinel.Username, opt.Sentinel.Password, opt.Sentinel.TLSConfig = opt.Username, opt.Password, opt.TLSConfig
	return opt, nil
}

func readSecret(path, field string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("store.redis.%s: %w", field, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("store.redis.%s: %s is empty", field, path)
	}
	return v, nil
}

func tlsConfig(t *affinity.RedisTLSConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("store.redis.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store.redis.tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("store.redis.tls: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// randomName names a replica that was given no name.
func randomName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return strings.TrimPrefix(host+"-", "-") + hex.EncodeToString(b[:])
}
