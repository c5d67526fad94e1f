package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a tiny DNS server on loopback that answers A queries for one
// name with the addresses it is given (and AAAA queries with nothing).
type dnsServer struct {
	conn  net.PacketConn
	mu    sync.Mutex
	addrs []netip.Addr
	srv   []dnsmessage.SRVResource // answers to SRV queries
	done  chan struct{}
}

func newDNSServer(t *testing.T) *dnsServer {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{conn: conn, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
	})
	return s
}

func (s *dnsServer) set(addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs = nil
	for _, a := range addrs {
		s.addrs = append(s.addrs, netip.MustParseAddr(a))
	}
}

func (s *dnsServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		s.mu.Lock()
		switch q.Type {
		case dnsmessage.TypeA:
			for _, a := range s.addrs {
				_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, dnsmessage.AResource{A: a.As4()})
			}
		case dnsmessage.TypeSRV:
			for _, r := range s.srv {
				_ = b.SRVResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, r)
			}
		}
		s.mu.Unlock()
		msg, err := b.Finish()
		if err == nil {
			_, _ = s.conn.WriteTo(msg, from)
		}
	}
}

// TestDNSDiscovery: the pool follows a DNS name whose answer changes; an
// empty answer keeps the last good hosts.
func TestDNSDiscovery(t *testing.T) {
	dns := newDNSServer(t)
	dns.set("127.0.0.11", "127.0.0.12")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, fmt.Sprintf("keys: {file: keys.txt}\npools:\n  - discovery:\n      interval: 100ms\n      dns: {name: web.test., port: 8080, server: '%s'}\n", dns.conn.LocalAddr()))
	_, adminAddr := startRun(t, io.Discard, "-config", cfg)
	eventually(t, poolIs(adminAddr, "127.0.0.11:8080,127.0.0.12:8080"))
	dns.set("127.0.0.12", "127.0.0.13")
	eventually(t, poolIs(adminAddr, "127.0.0.12:8080,127.0.0.13:8080"))
	// An empty answer is not applied.
	dns.set()
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
	dns.set("127.0.0.21")
	dns.mu.Lock()
	dns.srv = []dnsmessage.SRVResource{
		{Target: dnsmessage.MustNewName("a.web.test."), Port: 8081, Weight: 1},
		{Target: dnsmessage.MustNewName("b.web.test."), Port: 8082, Weight: 3},
	}
	dns.mu.Unlock()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, filepath.Join(dir, "keys.txt"), testKey+"\n")
	writeFile(t, cfg, fmt.Sprintf("keys: {file: keys.txt}\npools:\n  - discovery:\n      interval: 100ms\n      dns: {name: _http._tcp.web.test., srv: true, server: '%s'}\n", dns.conn.LocalAddr()))
	_, adminAddr := startRun(t, io.Discard, "-config", cfg)
	eventually(t, poolIs(adminAddr, "127.0.0.21:8081,127.0.0.21:8082"))
}
