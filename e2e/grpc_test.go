package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/internal/envoytree"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// The demo backend's gRPC methods (examples/backend/grpc.go, with -grpc).
const (
	helloMethod = "/envoyaffinity.demo.Backend/Hello"
	watchMethod = "/envoyaffinity.demo.Backend/Watch"
)

// grpcEnvoyYAML is envoy/<mode>.yaml with what gRPC needs, h2c from the
// clients and HTTP/2 to the backends, and the given route timeout.
func grpcEnvoyYAML(t *testing.T, mode, timeout string) []byte {
	t.Helper()
	y := shippedYAML(t, mode)
	// gRPC clients start HTTP/2 without TLS or an upgrade (h2c, prior
	// knowledge); AUTO, the default, tells it from HTTP/1.1 by its preface.
	envoytree.ConnectionManager(t, y)["codec_type"] = "AUTO"
	for _, r := range envoytree.Routes(t, y) {
		envoytree.Dig(t, r, "route")["timeout"] = timeout
	}
	// gRPC needs HTTP/2 to the backends too.
	envoytree.ClusterNamed(t, y, "app")["typed_extension_protocol_options"] = tree{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": tree{
			"@type":                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
			"explicit_http_config": tree{"http2_protocol_options": tree{}},
		},
	}
	data, err := yaml.Marshal(y)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// grpcStreamTimeout is the route timeout for gRPC: none. A stream lasts as
// long as its client keeps it, and Envoy's default route timeout (15 s)
// would end every longer one (TestGRPCRouteTimeout); the client's own
// deadline bounds each call.
const grpcStreamTimeout = "0s"

// grpcEnvoyFile writes grpcEnvoyYAML and returns its path.
func grpcEnvoyFile(t *testing.T, mode, timeout string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), mode+"-grpc.yaml")
	if err := os.WriteFile(path, grpcEnvoyYAML(t, mode, timeout), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// grpcConns are n connections of grpc-go clients to the Envoy listening on
// port, closed when the test ends.
func grpcConns(t *testing.T, port, n int) []*grpc.ClientConn {
	t.Helper()
	out := make([]*grpc.ClientConn, n)
	for i := range out {
		// No retry policy of the client's own: a call that fails through
		// Envoy fails the test.
		cc, err := grpc.NewClient("passthrough:///127.0.0.1:"+strconv.Itoa(port),
			grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		out[i] = cc
	}
	return out
}

// withKey is ctx whose calls carry the session key key ("": none).
func withKey(ctx context.Context, key string) context.Context {
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "x-session-id", key)
}

// grpcReply decodes the demo backend's reply.
func grpcReply(v *wrapperspb.StringValue) (launch.Reply, error) {
	var r launch.Reply
	err := json.Unmarshal([]byte(v.GetValue()), &r)
	return r, err
}

// hello makes one unary call of the session key on cc.
func hello(cc *grpc.ClientConn, key string) (launch.Reply, error) {
	ctx, cancel := context.WithTimeout(withKey(context.Background(), key), 5*time.Second)
	defer cancel()
	var out wrapperspb.StringValue
	if err := cc.Invoke(ctx, helloMethod, &emptypb.Empty{}, &out); err != nil {
		return launch.Reply{}, err
	}
	return grpcReply(&out)
}

// watch opens a server stream of the session key on cc and returns its
// first reply; recv reads the next one. The stream ends with ctx.
func watch(ctx context.Context, cc *grpc.ClientConn, key string) (first launch.Reply, recv func() (launch.Reply, error), err error) {
	st, err := cc.NewStream(withKey(ctx, key), &grpc.StreamDesc{ServerStreams: true}, watchMethod)
	if err != nil {
		return launch.Reply{}, nil, err
	}
	if err := st.SendMsg(&emptypb.Empty{}); err != nil {
		return launch.Reply{}, nil, err
	}
	if err := st.CloseSend(); err != nil {
		return launch.Reply{}, nil, err
	}
	recv = func() (launch.Reply, error) {
		var m wrapperspb.StringValue
		if err := st.RecvMsg(&m); err != nil {
			return launch.Reply{}, err
		}
		return grpcReply(&m)
	}
	first, err = recv()
	return first, recv, err
}

// TestGRPCFailover: grpc-go clients call grpc-go backends (the demo backend
// with -grpc) through Envoy, h2c on both sides, 30 sessions keyed by their
// x-session-id metadata over three connections, each making unary calls one
// after the other. backend-2's process is killed (SIGKILL) under that load
// and restarted at the same address. No call fails: Envoy's retry takes
// backend-2's calls to each session's successor; each of its sessions is
// then answered by exactly one other host and, re-bound there, none goes
// back after the restart (with failback, all do). No other session moves.
// A server stream open on backend-2 ends with INTERNAL, which Envoy cannot
// retry once the response has begun; a new stream of its session goes to
// the session's new host.
func TestGRPCFailover(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, mode string
		failback   bool
	}{
		{name: "opaque", mode: "opaque"},
		{name: "verified", mode: "verified"},
		{name: "opaque/failback", mode: "opaque", failback: true},
		{name: "verified/failback", mode: "verified", failback: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStackWith(t, launch.Options{
				Mode: tt.mode, Failback: tt.failback, KeySources: keySources["header"],
				EnvoyYAML: grpcEnvoyFile(t, tt.mode, grpcStreamTimeout), BackendArgs: []string{"-grpc"},
			})
			ctx := context.Background()
			const victim = "backend-2"
			conns := grpcConns(t, s.ListenPort, 3)
			connOf := map[*session]*grpc.ClientConn{}
			sessions := openSessionsOn(t, 30, 6, func(i int) (*session, error) {
				cc, key := conns[i%len(conns)], fmt.Sprintf("user-%d", i)
				ss := &session{headers: []string{"x-session-id", key}, call: func() (launch.Reply, error) { return hello(cc, key) }}
				r, err := ss.call()
				ss.host = r.Host
				connOf[ss] = cc
				return ss, err
			}, victim)

			var (
				load                      phasedLoad
				calls, failed             int
				othersMoved, backOnVictim int
				servedBy                  = map[*session]map[string]int{} // victim sessions after the kill, by host
				inPhase                   = map[string]map[*session]int{}
			)
			load.run(t, sessions, 3, func(ss *session, at string, r launch.Reply, err error) {
				calls++
				if inPhase[at] == nil {
					inPhase[at] = map[*session]int{}
				}
				inPhase[at][ss]++
				switch {
				case err != nil:
					failed++
					t.Errorf("%s: call of a %s session: %v", at, ss.host, err)
				case ss.host != victim:
					if r.Host != ss.host {
						othersMoved++
					}
				case at != "before":
					if servedBy[ss] == nil {
						servedBy[ss] = map[string]int{}
					}
					servedBy[ss][r.Host]++
					if at != "killed" && r.Host == victim {
						backOnVictim++
					}
				}
			}, nil)
			// everyCalled waits until each session (of the victim only, or
			// every one) has made n calls in the phase.
			everyCalled := func(phase string, n int, victimsOnly bool) {
				t.Helper()
				if err := launch.Eventually(ctx, 20*time.Second, func() error {
					load.mu.Lock()
					defer load.mu.Unlock()
					for _, ss := range sessions {
						if got := inPhase[phase][ss]; got < n && (!victimsOnly || ss.host == victim) {
							return fmt.Errorf("a session of %s made %d calls since %s, want %d", ss.host, got, phase, n)
						}
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			everyCalled("before", 5, false)

			// A server stream of one of backend-2's sessions, open when
			// backend-2 dies.
			var watched *session
			for _, ss := range sessions {
				if ss.host == victim {
					watched = ss
					break
				}
			}
			wctx, stopWatch := context.WithTimeout(ctx, 20*time.Second)
			defer stopWatch()
			first, recv, err := watch(wctx, connOf[watched], watched.headers[1])
			if err != nil || first.Host != victim {
				t.Fatalf("a stream of a %s session: %v, served by %s", victim, err, first.Host)
			}

			load.set("killed")
			killed := time.Now()
			s.Backends[1].Proc.Kill()
			for err == nil {
				_, err = recv()
			}
			streamEnd, streamAfter := status.Convert(err), time.Since(killed)
			stopWatch()

			everyCalled("killed", 10, true)
			load.mu.Lock()
			moved := maps.Clone(servedBy[watched]) // the load goes on adding to it
			load.mu.Unlock()
			if len(moved) != 1 {
				t.Fatalf("the watched session was served by %v after the kill", moved)
			}
			wctx, stopWatch = context.WithTimeout(ctx, 20*time.Second)
			defer stopWatch()
			again, _, err := watch(wctx, connOf[watched], watched.headers[1])
			stopWatch()
			if err != nil || moved[again.Host] == 0 {
				t.Fatalf("a new stream of the watched session: %v, served by %s; its calls by %v", err, again.Host, moved)
			}

			if err := s.StartBackend(ctx, 1); err != nil {
				t.Fatal(err)
			}
			load.set("restarted")
			// Back in Envoy's cluster (its health check passes again): a call
			// without a session, which Envoy's fallback policy places, can
			// reach it.
			if err := launch.Eventually(ctx, 10*time.Second, func() error {
				if r, err := hello(conns[0], ""); err != nil || r.Host != victim {
					return fmt.Errorf("no call reached the restarted %s yet (%v)", victim, err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			load.set("back")
			everyCalled("back", 10, false)
			load.stop()
			rebinds := servedElsewhere(t, s)
			retries, _ := s.EnvoyStat("cluster.app.upstream_rq_retry")

			victims, stayed, returned := victimsNow(t, sessions, victim, servedBy)
			t.Logf("%s: %d unary calls, %d failed, %d of other sessions moved; of %d sessions on %s, %d stayed on the one host that answered them after the kill, %d returned (%d calls there after the restart); %d re-bound where they were served; Envoy retried %d calls; the open stream ended %v after the kill with %s %q, a new one went to %s",
				tt.name, calls, failed, othersMoved, victims, victim, stayed, returned, backOnVictim, rebinds, retries, streamAfter.Round(time.Millisecond), streamEnd.Code(), streamEnd.Message(), again.Host)
			switch {
			case failed != 0 || othersMoved != 0:
				t.Fatalf("%d calls failed, %d calls of other sessions moved", failed, othersMoved)
			case streamEnd.Code() != codes.Internal:
				t.Fatalf("the stream open on %s ended with %s %q, want %s", victim, streamEnd.Code(), streamEnd.Message(), codes.Internal)
			case tt.failback && (returned != victims || rebinds != 0):
				t.Fatalf("failback: %d of %d sessions returned to %s, %d re-bound", returned, victims, victim, rebinds)
			case !tt.failback && (stayed != victims || backOnVictim != 0 || rebinds != victims):
				t.Fatalf("%d of %d sessions stayed where they failed over, %d calls went back to %s, %d re-binds (want one each)", stayed, victims, backOnVictim, victim, rebinds)
			}
		})
	}
}

// TestGRPCRouteTimeout: a route timeout ends a server stream that outlasts
// it with INTERNAL, as the death of its backend does; through an Envoy
// whose routes have none (grpcStreamTimeout) a stream goes on.
func TestGRPCRouteTimeout(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	s := newStackWith(t, launch.Options{
		Mode: "opaque", KeySources: keySources["header"],
		EnvoyYAML: grpcEnvoyFile(t, "opaque", timeout.String()), BackendArgs: []string{"-grpc"},
	})
	g, err := s.AddEnvoyWith(context.Background(), grpcEnvoyYAML(t, "opaque", grpcStreamTimeout))
	if err != nil {
		t.Fatal(err)
	}
	// No deadline, as a long stream often has none; a bound of the test's
	// own instead.
	ctx, cancel := context.WithCancel(context.Background())
	defer time.AfterFunc(20*time.Second, cancel).Stop()
	defer cancel()
	start := time.Now()
	_, timed, err := watch(ctx, grpcConns(t, s.ListenPort, 1)[0], "user-1")
	if err != nil {
		t.Fatal(err)
	}
	_, untimed, err := watch(ctx, grpcConns(t, g.ListenPort, 1)[0], "user-2")
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = timed()
	}
	end, after := status.Convert(err), time.Since(start)
	for time.Since(start) < 2*timeout {
		if _, err := untimed(); err != nil {
			t.Fatalf("the stream through the Envoy without a route timeout: %v", err)
		}
	}
	t.Logf("route timeout %v: a stream ended after %v with %s %q; without one, a stream opened with it still ran after %v",
		timeout, after.Round(time.Millisecond), end.Code(), end.Message(), time.Since(start).Round(time.Millisecond))
	if end.Code() != codes.Internal || after < timeout {
		t.Fatalf("the stream through the Envoy with a route timeout of %v ended after %v with %s %q, want %s", timeout, after, end.Code(), end.Message(), codes.Internal)
	}
}
