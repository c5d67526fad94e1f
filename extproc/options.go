package extproc

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits of the gRPC server. Envoy's messages are request or response
// headers (no bodies: the filter never sends them) of at most its header
// limit (60 KiB by default, 96 KiB at most), so a message or header list of
// 1 MiB is Envoy's with room, and anything larger is not Envoy.
const (
	// MaxConcurrentStreams per connection. Envoy's HTTP/2 pool does not
	// open another connection on the server's setting alone (it queues the
	// streams past it), so the Envoy YAML sets its cluster's
	// max_concurrent_streams to this: then it does. A stream lives as long
	// as its HTTP request, so the bound is generous; it limits what one
	// client connection can hold open (a goroutine and buffers each).
	MaxConcurrentStreams = 10_000
	// MaxRecvMsgSize is the largest message accepted (gRPC's default: 4 MiB).
	MaxRecvMsgSize = 1 << 20
	// MaxHeaderListSize bounds a stream's gRPC metadata (default: 16 MiB).
	MaxHeaderListSize = 1 << 20
)

// ServerOptions are the gRPC server settings the service runs with.
//
// Envoy keeps a few long-lived HTTP/2 connections to the service and may
// ping them (the cluster's connection_keepalive). gRPC's default answer to
// pings more often than every 5 minutes is to close the connection
// (GOAWAY "too_many_pings"); pings every 5 s, also between streams, are
// allowed here so that a connection Envoy keeps warm on purpose stays open.
// The server pings a connection silent for a minute itself and closes it
// when no answer comes within 20 s, so that a peer that vanished (or a
// client that opened a connection and went quiet) does not hold it.
//
// Measured and left out: a fixed pool of stream workers
// (grpc.NumStreamWorkers) and shared write buffers made no difference above
// the noise in BenchmarkGRPCStreams (45,000-50,000 streams/s at 64 streams
// either way, two runs each).
func ServerOptions() []grpc.ServerOption {
	return serverOptions(MaxConcurrentStreams)
}

func serverOptions(streams uint32) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.MaxConcurrentStreams(streams),
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		grpc.MaxHeaderListSize(MaxHeaderListSize),
		// A TLS handshake (or the HTTP/2 preface) must finish within this.
		grpc.ConnectionTimeout(10 * time.Second),
	}
}
