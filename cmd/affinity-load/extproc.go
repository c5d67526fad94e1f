package main

import (
	"context"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// streamLoop plays Envoy against the service's ext_proc listener at addr,
// with no Envoy in between: conns streams at a time, back to back, each
// the request-headers message of one session (a random line of cookies)
// as Envoy sends it, answered, then closed. The latency of a stream runs
// from its opening to its answer. All streams share one HTTP/2 connection,
// as Envoy's do.
//
// health makes each request a grpc.health.v1 Check instead: a unary call
// that does no work, the floor of a gRPC exchange between the two
// processes on this machine.
func streamLoop(addr string, cookies []string, conns int, d time.Duration, health bool) (Result, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)
	checker := healthpb.NewHealthClient(conn)
	reqs := make([]*extprocv3.ProcessingRequest, max(len(cookies), 1))
	for i := range reqs {
		h := []*corev3.HeaderValue{
			{Key: ":method", RawValue: []byte("GET")}, {Key: ":path", RawValue: []byte("/")},
			{Key: ":authority", RawValue: []byte("app.example")}, {Key: "user-agent", RawValue: []byte("affinity-load")},
		}
		if len(cookies) > 0 {
			name, value := sessionHeader(cookies[i])
			h = append(h, &corev3.HeaderValue{Key: strings.ToLower(name), RawValue: []byte(value)})
		}
		reqs[i] = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: h}, EndOfStream: true}}}
	}
	one := func(req *extprocv3.ProcessingRequest) (time.Duration, error) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		start := time.Now()
		if health {
			_, err := checker.Check(ctx, &healthpb.HealthCheckRequest{})
			return time.Since(start), err
		}
		st, err := client.Process(ctx)
		if err != nil {
			return 0, err
		}
		if err := st.Send(req); err != nil {
			return 0, err
		}
		if _, err := st.Recv(); err != nil {
			return 0, err
		}
		took := time.Since(start)
		if err := st.CloseSend(); err != nil {
			return 0, err
		}
		if _, err := st.Recv(); err != io.EOF {
			return 0, err
		}
		return took, nil
	}
	mode := "streams"
	if health {
		mode = "health"
	}
	return backToBack(mode, conns, d, func(w int) func() (time.Duration, error) {
		rng := rand.New(rand.NewPCG(uint64(w), 2))
		return func() (time.Duration, error) { return one(reqs[rng.IntN(len(reqs))]) }
	}), nil
}
