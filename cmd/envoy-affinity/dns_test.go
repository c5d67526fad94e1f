package main

import (
	"fmt"
	"io"
	"path/filepath"
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
