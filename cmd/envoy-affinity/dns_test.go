package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"golang.org/x/net/dns/dnsmessage"
)

// newDNSServer starts a loopback DNS server for the test's duration.
func newDNSServer(t *testing.T) *launch.DNSServer {
	t.Helper()
	s, err := launch.NewDNSServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestDNSDiscovery: the pool follows a DNS name whose answer changes; an
// empty answer keeps the last good hosts.
func TestDNSDiscovery(t *testing.T) {
	dns := newDNSServer(t)
	dns.SetA("127.0.0.11", "127.0.0.12")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, fmt.Sprintf("keys: {file: keys.txt}\npools:\n  - discovery:\n      interval: 100ms\n      dns: {name: web.test., port: 8080, server: '%s'}\n", dns.Addr()))
	_, adminAddr := startRun(t, io.Discard, "-config", cfg)
	eventually(t, poolIs(adminAddr, "127.0.0.11:8080,127.0.0.12:8080"))
	dns.SetA("127.0.0.12", "127.0.0.13")
	eventually(t, poolIs(adminAddr, "127.0.0.12:8080,127.0.0.13:8080"))
	// An empty answer is not applied.
	dns.SetA()
	eventually(t, func() error {
		resp, err := httpGetJSON("http://" + adminAddr + "/debug/pools")
		if err != nil {
			return err
		}
		if resp.Pools[0].Source.Errors == 0 {
			return fmt.Errorf("no failed read counted yet")
		}
		return nil
	})
	eventually(t, poolIs(adminAddr, "127.0.0.12:8080,127.0.0.13:8080"))
}

// TestDNSDiscoverySRV: SRV records give each host its own port and weight;
// their targets resolve through the same server.
func TestDNSDiscoverySRV(t *testing.T) {
	dns := newDNSServer(t)
	dns.SetA("127.0.0.21")
	dns.SetSRV(
		dnsmessage.SRVResource{Target: dnsmessage.MustNewName("a.web.test."), Port: 8081, Weight: 1},
		dnsmessage.SRVResource{Target: dnsmessage.MustNewName("b.web.test."), Port: 8082, Weight: 3},
	)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, fmt.Sprintf("keys: {file: keys.txt}\npools:\n  - discovery:\n      interval: 100ms\n      dns: {name: _http._tcp.web.test., srv: true, server: '%s'}\n", dns.Addr()))
	_, adminAddr := startRun(t, io.Discard, "-config", cfg)
	eventually(t, poolIs(adminAddr, "127.0.0.21:8081,127.0.0.21:8082"))
}

// TestDoctorResolvesDNSPools: the doctor compares a DNS pool's hosts, as
// the name resolves now, with Envoy's cluster members.
func TestDoctorResolvesDNSPools(t *testing.T) {
	dns := newDNSServer(t)
	dns.SetA("127.0.0.1", "127.0.0.9")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, fmt.Sprintf("keys: {file: keys.txt}\npools:\n  - discovery:\n      dns: {name: web.test., port: 8081, server: '%s'}\n", dns.Addr()))
	var out strings.Builder
	err := Run(context.Background(), []string{"doctor", "-config", cfg, "-envoy-yaml", filepath.Join("..", "..", "envoy", "verified.yaml")}, &out, io.Discard)
	if !errors.Is(err, errProblems) {
		t.Fatalf("doctor: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"error hosts.missing: pool default, cluster \"app\": the pool's host 127.0.0.9:8081 is not a member",
		"warning hosts.extra: pool default, cluster \"app\": Envoy's member 127.0.0.1:8082 is not one of the pool's hosts",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "127.0.0.1:8081 is not") {
		t.Errorf("the resolved host Envoy has is reported:\n%s", out.String())
	}
}
