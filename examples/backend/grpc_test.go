package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestGRPC: with -grpc one port answers gRPC over h2c and plain HTTP/1.1.
// Hello counts the calls of the session its metadata names, or starts one
// and names it in the response headers; Watch repeats its reply until the
// client goes.
func TestGRPC(t *testing.T) {
	a := &app{name: "backend-7", cookie: "app_session", counts: map[string]int{}}
	srv := &http.Server{Handler: http.HandlerFunc(a.ServeHTTP)}
	a.serveGRPC(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	})
	cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	decode := func(v *wrapperspb.StringValue) reply {
		t.Helper()
		var r reply
		if err := json.Unmarshal([]byte(v.GetValue()), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}

	keyed := metadata.AppendToOutgoingContext(ctx, defaultGRPCHeader, "user-1")
	for want := 1; want <= 2; want++ {
		var out wrapperspb.StringValue
		if err := cc.Invoke(keyed, "/"+grpcService+"/Hello", &emptypb.Empty{}, &out); err != nil {
			t.Fatal(err)
		}
		if r := decode(&out); r.Host != "backend-7" || r.Session != "user-1" || r.Count != want {
			t.Fatalf("call %d: %+v", want, r)
		}
	}
	var out wrapperspb.StringValue
	var header metadata.MD
	if err := cc.Invoke(ctx, "/"+grpcService+"/Hello", &emptypb.Empty{}, &out, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if r, h := decode(&out), header.Get(defaultGRPCHeader); r.Session == "" || len(h) != 1 || h[0] != r.Session || r.Count != 1 {
		t.Fatalf("a call without a session: %+v, headers %v", r, header)
	}

	wctx, stop := context.WithCancel(keyed)
	st, err := cc.NewStream(wctx, &grpc.StreamDesc{ServerStreams: true}, "/"+grpcService+"/Watch")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(&emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var m wrapperspb.StringValue
		if err := st.RecvMsg(&m); err != nil {
			t.Fatal(err)
		}
		if r := decode(&m); r.Session != "user-1" || r.Count != 3 {
			t.Fatalf("watch: %+v", r)
		}
	}
	stop()

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 1 || resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP/1.1 beside gRPC: %s %s", resp.Proto, body)
	}
}
