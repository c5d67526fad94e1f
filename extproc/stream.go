// The stream loop: one gRPC stream per HTTP request, each message
// received, answered by its phase, and sent back, until the stream ends.

package extproc

import (
	"context"
	"errors"
	"io"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// Process serves one HTTP request's stream: Envoy sends the request headers,
// then (unless the answer switched it off) the response headers; every
// message gets exactly one answer.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := stream.Context()
	s.obs.StreamOpened()
	defer s.obs.StreamClosed()
	var ex exchange
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(PoolMetadataKey); len(v) > 0 {
			ex.pool = v[0]
		}
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return streamExit(ctx, "receive", err)
		}
		resp := ex.answer(s, req)
		if err := stream.Send(resp); err != nil {
			return streamExit(ctx, "send", err)
		}
	}
}

// streamExit maps the end of a stream to the stream's return value: a client
// that closed or went away is a normal end, a done context ends with its
// error, anything else is an internal error Envoy will see.
func streamExit(ctx context.Context, op string, err error) error {
	switch {
	case errors.Is(err, io.EOF), status.Code(err) == codes.Canceled:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return status.Errorf(codes.Internal, "ext_proc %s: %v", op, err)
}

// exchange is the state of one HTTP request across its messages.
type exchange struct {
	pool string // named by Envoy's initial metadata, or ""
	// decision is the request's decision when it wants to hear of the
	// response (nil otherwise).
	decision *affinity.Decision
}

// answer hands a message to its phase; a body or trailers message, which
// Envoy sends only when its processing mode asks, gets an empty answer.
func (ex *exchange) answer(s *Server, req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch r := req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return ex.requestHeaders(s, req, r.RequestHeaders)
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return ex.responseHeaders(s, req, r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
	}
	// A message type this version does not know: an empty answer keeps the
	// stream in step and Envoy carries on.
	return &extprocv3.ProcessingResponse{}
}
