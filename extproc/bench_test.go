package extproc

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// benchEngine is an opaque-mode engine with three hosts and one established
// session's cookie.
func benchEngine(b testing.TB) (*affinity.Engine, string) {
	b.Helper()
	return benchEngineWith(b, "")
}

// benchEngineWith is benchEngine whose pool has more fields (poolYAML,
// indented by four spaces).
func benchEngineWith(b testing.TB, poolYAML string) (*affinity.Engine, string) {
	b.Helper()
	cfg, err := affinity.ParseConfig("b.yaml", []byte("keys: {env: K}\npools:\n  - mode: opaque\n"+poolYAML+"    hosts: [{address: '127.0.0.1:1'}, {address: '127.0.0.2:1'}, {address: '127.0.0.3:1'}]\n"))
	if err != nil {
		b.Fatal(err)
	}
	ring, err := affinity.ParseKeyring("e1:ed25519:ZWQyNTUxOS1zZWVkLWZvci10ZXN0cy0wMTIzNDU2Nzg")
	if err != nil {
		b.Fatal(err)
	}
	e := affinity.NewEngine(cfg.Build(ring), func() time.Time { return time.Unix(1_800_000_000, 0) })
	cookie, _, _ := strings.Cut(e.Decide(affinity.Request{}).SetCookie, ";")
	return e, cookie
}

// replayStream hands out the same request for ever and drops answers.
type replayStream struct {
	fakeStream
	req *extprocv3.ProcessingRequest
	n   int
}

func (r *replayStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if r.n == 0 {
		return nil, io.EOF
	}
	r.n--
	return r.req, nil
}

func (r *replayStream) Send(*extprocv3.ProcessingResponse) error { return nil }

// BenchmarkStreamEstablished is one ext_proc stream of an established
// session in opaque mode: the request-headers message and its answer.
func BenchmarkStreamEstablished(b *testing.B) {
	e, cookie := benchEngine(b)
	benchStreamEstablished(b, e, cookie)
}

// BenchmarkStreamEstablishedOutputHeaders is the same with both output
// headers: the shared answer carries them, built once.
func BenchmarkStreamEstablishedOutputHeaders(b *testing.B) {
	e, cookie := benchEngineWith(b, "    output: {header: x-affinity-destination, stateful_session_header: x-session-host}\n")
	benchStreamEstablished(b, e, cookie)
}

func benchStreamEstablished(b *testing.B, e *affinity.Engine, cookie string) {
	srv := NewServer(e, nil)
	req := requestHeaders("app", ":method", "GET", ":path", "/cart", ":authority", "shop.example", "user-agent", "bench", "cookie", "lang=en; "+cookie)
	s := &replayStream{fakeStream: fakeStream{ctx: context.Background()}, req: req}
	b.ReportAllocs()
	for b.Loop() {
		s.n = 1
		if err := srv.Process(s); err != nil {
			b.Fatal(err)
		}
	}
}

// marshalStream marshals every answer, as gRPC does when it sends one.
type marshalStream struct{ replayStream }

func (m *marshalStream) Send(r *extprocv3.ProcessingResponse) error {
	_, err := proto.Marshal(r)
	return err
}

// TestSharedAnswersConcurrently runs many streams of one established
// session at once: they share one cached answer, which gRPC marshals for
// each of them (the race detector watches).
func TestSharedAnswersConcurrently(t *testing.T) {
	cfg, err := affinity.ParseConfig("b.yaml", []byte("keys: {env: K}\npools:\n  - mode: opaque\n    hosts: [{address: '127.0.0.1:1'}, {address: '127.0.0.2:1'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := affinity.ParseKeyring("e1:ed25519:ZWQyNTUxOS1zZWVkLWZvci10ZXN0cy0wMTIzNDU2Nzg")
	e := affinity.NewEngine(cfg.Build(ring), nil)
	cookie, _, _ := strings.Cut(e.Decide(affinity.Request{}).SetCookie, ";")
	srv := NewServer(e, nil)
	req := requestHeaders("", "cookie", cookie)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				s := &marshalStream{replayStream{fakeStream: fakeStream{ctx: context.Background()}, req: req, n: 1}}
				if err := srv.Process(s); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
