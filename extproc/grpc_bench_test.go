package extproc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// BenchmarkGRPCStreams is the server alone over real gRPC on loopback: a
// client that plays Envoy opens one stream per request and sends the
// request-headers message of an established session (opaque mode), as Envoy
// does. Reported per stream: the latency percentiles, at 1 and 64
// concurrent streams.
func BenchmarkGRPCStreams(b *testing.B) {
	benchGRPCStreams(b, nil, insecure.NewCredentials())
}

// BenchmarkGRPCStreamsMTLS is BenchmarkGRPCStreams over mutual TLS (ECDSA
// P-256 certificates, TLS 1.3), the connection made once as Envoy does:
// what encrypting each stream's frames costs.
func BenchmarkGRPCStreamsMTLS(b *testing.B) {
	ca, err := launch.NewCA("bench CA")
	if err != nil {
		b.Fatal(err)
	}
	server, err := ca.Server("envoy-affinity.internal")
	if err != nil {
		b.Fatal(err)
	}
	client, err := ca.Client("envoy")
	if err != nil {
		b.Fatal(err)
	}
	pair := func(c launch.Cert) tls.Certificate {
		p, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	serverCreds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair(server)}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
	clientCreds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair(client)}, RootCAs: pool, ServerName: "envoy-affinity.internal"})
	benchGRPCStreams(b, []grpc.ServerOption{grpc.Creds(serverCreds)}, clientCreds)
}

func benchGRPCStreams(b *testing.B, serverOpts []grpc.ServerOption, clientCreds credentials.TransportCredentials) {
	e, cookie := benchEngine(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(append(ServerOptions(), serverOpts...)...)
	extprocv3.RegisterExternalProcessorServer(srv, NewServer(e, nil))
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(clientCreds))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)
	req := requestHeaders("app", ":method", "GET", ":path", "/cart", ":authority", "shop.example", "cookie", "lang=en; "+cookie)

	oneStream := func() error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st, err := client.Process(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(req); err != nil {
			return err
		}
		if _, err := st.Recv(); err != nil {
			return err
		}
		return st.CloseSend()
	}
	for _, c := range []int{1, 64} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			var mu sync.Mutex
			var lat []time.Duration
			work := make(chan struct{})
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range c {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var mine []time.Duration
					for range work {
						t0 := time.Now()
						if err := oneStream(); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				}()
			}
			for i := 0; i < b.N; i++ {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
			elapsed := time.Since(start)
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
				b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "streams/s")
			}
		})
	}
}
