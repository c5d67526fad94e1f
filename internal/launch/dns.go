package launch

import (
	"net"
	"net/netip"
	"slices"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer is a tiny DNS server on a loopback UDP port for tests of host
// discovery: it answers A queries with the addresses it is given, SRV
// queries with the records it is given, and anything else with no record.
type DNSServer struct {
	conn net.PacketConn
	done chan struct{}

	mu    sync.Mutex
	addrs []netip.Addr
	srv   []dnsmessage.SRVResource
	asked []string // names asked, in order
}

// NewDNSServer starts a server; Close stops it.
func NewDNSServer() (*DNSServer, error) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &DNSServer{conn: conn, done: make(chan struct{})}
	go s.serve()
	return s, nil
}

// Addr is the server's ip:port.
func (s *DNSServer) Addr() string { return s.conn.LocalAddr().String() }

// SetA sets the answer to A queries (IPv4 addresses; none is an empty answer).
func (s *DNSServer) SetA(addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs = nil
	for _, a := range addrs {
		s.addrs = append(s.addrs, netip.MustParseAddr(a))
	}
}

// SetSRV sets the answer to SRV queries.
func (s *DNSServer) SetSRV(records ...dnsmessage.SRVResource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv = slices.Clone(records)
}

// Asked returns the names asked so far, fully qualified.
func (s *DNSServer) Asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.asked)
}

// Close stops the server and waits for it.
func (s *DNSServer) Close() {
	s.conn.Close()
	<-s.done
}

func (s *DNSServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if msg, ok := s.answer(buf[:n]); ok {
			_, _ = s.conn.WriteTo(msg, from)
		}
	}
}

// answer builds the response to one query; false for a malformed one.
func (s *DNSServer) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(q)
	_ = b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
	s.mu.Lock()
	s.asked = append(s.asked, q.Name.String())
	switch q.Type {
	case dnsmessage.TypeA:
		for _, a := range s.addrs {
			_ = b.AResource(rh, dnsmessage.AResource{A: a.As4()})
		}
	case dnsmessage.TypeSRV:
		for _, r := range s.srv {
			_ = b.SRVResource(rh, r)
		}
	}
	s.mu.Unlock()
	msg, err := b.Finish()
	return msg, err == nil
}
