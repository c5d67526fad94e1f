package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The demo's gRPC service, written out by hand so that no protoc step is
// needed: its messages are protobuf's well-known types.
//
//	service envoyaffinity.demo.Backend {
//	  // The JSON reply of the HTTP side, for the session of the call.
//	  rpc Hello(google.protobuf.Empty) returns (google.protobuf.StringValue);
//	  // The same reply, again every watchInterval until the client goes.
//	  rpc Watch(google.protobuf.Empty) returns (stream google.protobuf.StringValue);
//	}
const grpcService = "envoyaffinity.demo.Backend"

// watchInterval is how often Watch sends its reply.
const watchInterval = 100 * time.Millisecond

// defaultGRPCHeader carries the session of a gRPC call when -session-header
// names none: gRPC clients keep no cookies.
const defaultGRPCHeader = "x-session-id"

// grpcServer serves the demo service; each call counts once for its session.
func (a *app) grpcServer() *grpc.Server {
	s := grpc.NewServer()
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: grpcService,
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Hello", Handler: a.hello}},
		Streams:     []grpc.StreamDesc{{StreamName: "Watch", Handler: a.watch, ServerStreams: true}},
	}, a)
	return s
}

func (a *app) hello(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	if err := dec(new(emptypb.Empty)); err != nil {
		return nil, err
	}
	return a.grpcReply(ctx)
}

func (a *app) watch(_ any, stream grpc.ServerStream) error {
	if err := stream.RecvMsg(new(emptypb.Empty)); err != nil {
		return err
	}
	r, err := a.grpcReply(stream.Context())
	if err != nil {
		return err
	}
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		if err := stream.SendMsg(r); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-t.C:
		}
	}
}

// grpcReply counts a call for the session its metadata names (one it
// starts, named in the response headers, when there is none).
func (a *app) grpcReply(ctx context.Context) (*wrapperspb.StringValue, error) {
	header := a.header
	if header == "" {
		header = defaultGRPCHeader
	}
	md, _ := metadata.FromIncomingContext(ctx)
	sid := ""
	if v := md.Get(header); len(v) > 0 {
		sid = v[0]
	}
	if sid == "" {
		sid = newSessionID()
		if err := grpc.SetHeader(ctx, metadata.Pairs(header, sid)); err != nil {
			return nil, err
		}
	}
	body, err := json.Marshal(reply{Host: a.name, Session: sid, Count: a.count(sid), Told: told(md)})
	if err != nil {
		return nil, err
	}
	return wrapperspb.String(string(body)), nil
}

// serveGRPC makes srv answer gRPC calls (HTTP/2, content type
// application/grpc) beside its own handler's requests.
func (a *app) serveGRPC(srv *http.Server) {
	gs, next := a.grpcServer(), srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
	// gRPC clients and Envoy's HTTP/2 upstreams start HTTP/2 at once,
	// without TLS or an upgrade (prior knowledge).
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
}
