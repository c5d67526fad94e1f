package extproc

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// limitedServer serves the engine over loopback gRPC with the service's
// options, at most streams concurrent streams per connection.
func limitedServer(t *testing.T, streams uint32) extprocv3.ExternalProcessorClient {
	t.Helper()
	e, _ := benchEngine(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(serverOptions(streams)...)
	extprocv3.RegisterExternalProcessorServer(srv, NewServer(e, nil))
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn)
}

func TestServerRefusesOversizedMessages(t *testing.T) {
	client := limitedServer(t, MaxConcurrentStreams)
	tests := []struct {
		name  string
		bytes int
		ok    bool
	}{
		{"Envoy's largest headers", 96 << 10, true},
		{"more than a MiB", MaxRecvMsgSize + 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := client.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req := requestHeaders("app", ":method", "GET", ":path", "/")
			h := req.GetRequestHeaders().Headers
			h.Headers = append(h.Headers, &corev3.HeaderValue{Key: "x-big", RawValue: []byte(strings.Repeat("a", tt.bytes))})
			if err := st.Send(req); err != nil && !errors.Is(err, context.Canceled) {
				t.Logf("send: %v", err)
			}
			_, err = st.Recv()
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("got %v, want ResourceExhausted", err)
			}
		})
	}
}

// TestServerLimitsStreamsPerConnection: past the limit a connection's next
// stream waits until one of its streams ends (Envoy then opens another
// connection).
func TestServerLimitsStreamsPerConnection(t *testing.T) {
	client := limitedServer(t, 2)
	open := func(ctx context.Context) (extprocv3.ExternalProcessor_ProcessClient, error) {
		st, err := client.Process(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(requestHeaders("app", ":method", "GET", ":path", "/")); err != nil {
			return nil, err
		}
		_, err = st.Recv()
		return st, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(ctx); err != nil {
		t.Fatal(err)
	}
	short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	defer stop()
	if _, err := open(short); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a third stream on the connection: %v, want it to wait", err)
	}
	// One stream ends: the next one goes through.
	if err := first.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err == nil {
		t.Fatal("the first stream did not end")
	}
	if _, err := open(ctx); err != nil {
		t.Fatalf("after a stream ended: %v", err)
	}
}
