package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// fakeStream plays Envoy: it hands out reqs, then end, and records answers.
type fakeStream struct {
	grpc.ServerStream
	ctx     context.Context
	reqs    []*extprocv3.ProcessingRequest
	end     error
	sendErr error
	sent    []*extprocv3.ProcessingResponse
}

func (f *fakeStream) Context() context.Context { return f.ctx }

func (f *fakeStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if len(f.reqs) == 0 {
		return nil, f.end
	}
	r := f.reqs[0]
	f.reqs = f.reqs[1:]
	return r, nil
}

func (f *fakeStream) Send(r *extprocv3.ProcessingResponse) error {
	if f.sendErr != nil {
		return f.sendErr
	}
	f.sent = append(f.sent, r)
	return nil
}

// fakeDecider returns a fixed decision and reply, and records what it was
// asked.
type fakeDecider struct {
	d     affinity.Decision
	reply affinity.Reply
	seen  []affinity.Request
	told  []affinity.Upstream
}

func (f *fakeDecider) Decide(r affinity.Request) affinity.Decision {
	f.seen = append(f.seen, r)
	return f.d
}

func (f *fakeDecider) Respond(d *affinity.Decision, up affinity.Upstream) affinity.Reply {
	f.told = append(f.told, up)
	if reflect.DeepEqual(f.reply, affinity.Reply{}) && d != nil {
		return affinity.Reply{SetCookie: d.SetCookie} // as decided
	}
	return f.reply
}

func requestHeaders(cluster string, headers ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(headers); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: headers[i], RawValue: []byte(headers[i+1])})
	}
	req := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}}}
	if cluster != "" {
		attrs, _ := structpb.NewStruct(map[string]any{ClusterAttribute: cluster})
		req.Attributes = map[string]*structpb.Struct{AttributesKey: attrs}
	}
	return req
}

var responseHeaders = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}}

func TestProcessExits(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name     string
		ctx      context.Context
		end      error
		sendErr  error
		wantCode codes.Code
		wantErr  error
	}{
		{name: "envoy closes the stream", end: io.EOF},
		{name: "envoy cancels", end: status.Error(codes.Canceled, "canceled")},
		{name: "context done", ctx: canceled, end: status.Error(codes.Unavailable, "transport closing"), wantErr: context.Canceled},
		{name: "receive fails", end: errors.New("broken pipe"), wantCode: codes.Internal},
		{name: "send fails", end: io.EOF, sendErr: errors.New("broken pipe"), wantCode: codes.Internal},
		{name: "send after cancel", end: io.EOF, sendErr: status.Error(codes.Canceled, "canceled")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			fs := &fakeStream{ctx: ctx, reqs: []*extprocv3.ProcessingRequest{requestHeaders("")}, end: tt.end, sendErr: tt.sendErr}
			err := NewServer(&fakeDecider{}, nil).Process(fs)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			case tt.wantCode != codes.OK:
				if status.Code(err) != tt.wantCode {
					t.Fatalf("err = %v, want code %v", err, tt.wantCode)
				}
			case err != nil:
				t.Fatalf("err = %v, want nil", err)
			}
		})
	}
}

func destination(t *testing.T, r *extprocv3.ProcessingResponse) string {
	t.Helper()
	ns := r.GetDynamicMetadata().GetFields()[MetadataNamespace].GetStructValue()
	return ns.GetFields()[DestinationKey].GetStringValue()
}

func TestProcessNewSession(t *testing.T) {
	dec := &fakeDecider{d: affinity.Decision{Outcome: affinity.OutcomeNew, Hosts: []string{"10.0.0.1:80", "10.0.0.2:80"}, SetCookie: "affinity=tok; Path=/"}}
	fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{
		requestHeaders("app", ":path", "/", "Cookie", "a=1", "cookie", "b=2"),
		responseHeaders,
	}}
	if err := NewServer(dec, nil).Process(fs); err != nil {
		t.Fatal(err)
	}
	if len(fs.sent) != 2 {
		t.Fatalf("sent %d answers, want one per message", len(fs.sent))
	}
	if got := dec.seen[0]; got.Cluster != "app" || len(got.CookieHeaders) != 2 || got.CookieHeaders[1] != "b=2" {
		t.Fatalf("decider asked %+v", got)
	}
	first := fs.sent[0]
	if first.GetRequestHeaders() == nil || first.ModeOverride != nil {
		t.Fatalf("first answer %v: want request headers, response phase kept", first)
	}
	if got := destination(t, first); got != "10.0.0.1:80,10.0.0.2:80" {
		t.Fatalf("destination %q", got)
	}
	set := fs.sent[1].GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
	if len(set) != 1 || set[0].GetHeader().GetKey() != SetCookieHeader || string(set[0].GetHeader().GetRawValue()) != "affinity=tok; Path=/" ||
		set[0].GetHeader().GetValue() != "" || !set[0].GetAppend().GetValue() {
		t.Fatalf("set-cookie mutation %v", set)
	}
}

func TestProcessEstablishedSession(t *testing.T) {
	dec := &fakeDecider{d: affinity.Decision{Outcome: affinity.OutcomePinned, Hosts: []string{"10.0.0.1:80", "10.0.0.2:80"}}}
	fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{
		requestHeaders("", CookieHeader, "affinity=x", DestinationKey, "6.6.6.6:80", strings.ToUpper(ServedKey), "6.6.6.6:80"),
	}}
	if err := NewServer(dec, nil).Process(fs); err != nil {
		t.Fatal(err)
	}
	r := fs.sent[0]
	if r.GetModeOverride().GetResponseHeaderMode() != filterv3.ProcessingMode_SKIP {
		t.Fatalf("mode override %v: want the response phase skipped", r.GetModeOverride())
	}
	if got := destination(t, r); got != "10.0.0.1:80,10.0.0.2:80" {
		t.Fatalf("destination %q", got)
	}
	removed := r.GetRequestHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders()
	if len(removed) != 2 || removed[0] != DestinationKey || removed[1] != ServedKey {
		t.Fatalf("client override headers not removed: %v", removed)
	}
}

func TestProcessPassThrough(t *testing.T) {
	fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{
		requestHeaders("other"),
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{}}},
		{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}},
		responseHeaders,
		{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{}}},
		{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
	}}
	if err := NewServer(&fakeDecider{d: affinity.Decision{Reason: affinity.ReasonNoPool}}, nil).Process(fs); err != nil {
		t.Fatal(err)
	}
	if r := fs.sent[0]; r.DynamicMetadata != nil || r.GetModeOverride() == nil {
		t.Fatalf("pass-through answer %v: want no metadata and no response phase", r)
	}
	checks := []func(*extprocv3.ProcessingResponse) bool{
		func(r *extprocv3.ProcessingResponse) bool { return r.GetRequestHeaders() != nil },
		func(r *extprocv3.ProcessingResponse) bool { return r.GetRequestBody() != nil },
		func(r *extprocv3.ProcessingResponse) bool { return r.GetRequestTrailers() != nil },
		func(r *extprocv3.ProcessingResponse) bool {
			return r.GetResponseHeaders() != nil && r.GetResponseHeaders().GetResponse().GetHeaderMutation() == nil
		},
		func(r *extprocv3.ProcessingResponse) bool { return r.GetResponseBody() != nil },
		func(r *extprocv3.ProcessingResponse) bool { return r.GetResponseTrailers() != nil },
	}
	if len(fs.sent) != len(checks) {
		t.Fatalf("sent %d answers, want %d", len(fs.sent), len(checks))
	}
	for i, ok := range checks {
		if !ok(fs.sent[i]) {
			t.Errorf("answer %d has the wrong type: %v", i, fs.sent[i])
		}
	}
}

func TestProcessRejected(t *testing.T) {
	dec := &fakeDecider{d: affinity.Decision{Outcome: affinity.OutcomeRejected, Status: 503, Body: "gone\n", SetCookie: "affinity=; Max-Age=0"}}
	fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{requestHeaders("", "cookie", "affinity=x")}}
	if err := NewServer(dec, nil).Process(fs); err != nil {
		t.Fatal(err)
	}
	ir := fs.sent[0].GetImmediateResponse()
	if ir.GetStatus().GetCode() != 503 || string(ir.GetBody()) != "gone\n" {
		t.Fatalf("immediate response %v", ir)
	}
	set := ir.GetHeaders().GetSetHeaders()
	if len(set) != 2 || string(set[1].GetHeader().GetRawValue()) != "affinity=; Max-Age=0" || !set[1].GetAppend().GetValue() {
		t.Fatalf("headers %v", set)
	}
}

func TestProcessUpstreamHeadersAndLearning(t *testing.T) {
	dec := &fakeDecider{d: affinity.Decision{Outcome: affinity.OutcomeRebound, Hosts: []string{"10.0.0.2:80"},
		SetHeaders: [][2]string{{"x-session-rebound", "host-left"}}, RemoveHeaders: []string{"x-session-rebound"}, LearnCookie: "JSESSIONID"}}
	served, _ := structpb.NewStruct(map[string]any{ServedKey: "10.0.0.2:80"})
	resp := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: SetCookieHeader, RawValue: []byte("other=1; Path=/")},
			{Key: SetCookieHeader, RawValue: []byte("JSESSIONID=abc; Path=/; HttpOnly")},
		}}}},
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataNamespace: served}},
	}
	fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{
		requestHeaders("app", "x-session-rebound", "forged"), resp}}
	if err := NewServer(dec, nil).Process(fs); err != nil {
		t.Fatal(err)
	}
	first := fs.sent[0]
	if first.ModeOverride != nil {
		t.Fatal("the response phase was switched off though a cookie is to be learned")
	}
	mut := first.GetRequestHeaders().GetResponse().GetHeaderMutation()
	if len(mut.GetRemoveHeaders()) != 1 || len(mut.GetSetHeaders()) != 1 || string(mut.GetSetHeaders()[0].GetHeader().GetRawValue()) != "host-left" {
		t.Fatalf("request mutation %v", mut)
	}
	if len(dec.told) != 1 || dec.told[0].Served != "10.0.0.2:80" || fmt.Sprint(dec.told[0].SetCookies) != "[other=1; Path=/ JSESSIONID=abc; Path=/; HttpOnly]" {
		t.Fatalf("told the decider %+v", dec.told)
	}
}

func TestHeaderList(t *testing.T) {
	l := headerList{{Key: "x-session-id", RawValue: []byte("u1")}, {Key: "X-Other", Value: "v"}}
	if v, ok := l.Get("x-session-id"); !ok || v != "u1" {
		t.Fatal(v)
	}
	if v, ok := l.Get("x-other"); !ok || v != "v" {
		t.Fatal(v)
	}
	if _, ok := l.Get("missing"); ok {
		t.Fatal("found a missing header")
	}
}

func TestProcessPoolFromInitialMetadata(t *testing.T) {
	dec := &fakeDecider{}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(PoolMetadataKey, "shop"))
	fs := &fakeStream{ctx: ctx, end: io.EOF, reqs: []*extprocv3.ProcessingRequest{requestHeaders("app")}}
	if err := NewServer(dec, nil).Process(fs); err != nil {
		t.Fatal(err)
	}
	if got := dec.seen[0]; got.Pool != "shop" || got.Cluster != "app" {
		t.Fatalf("request %+v", got)
	}
}

// TestProcessResponse: the response phase hands what Envoy tells (the host
// that served, the status) to the decider and writes its reply back: the
// cookie appended to the application's, a re-bind reported to metrics.
func TestProcessResponse(t *testing.T) {
	response := func(served, status string) *extprocv3.ProcessingRequest {
		md, _ := structpb.NewStruct(map[string]any{ServedKey: served})
		return &extprocv3.ProcessingRequest{
			Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: StatusHeader, RawValue: []byte(status)}}}}},
			MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataNamespace: md}},
		}
	}
	tests := []struct {
		name           string
		served, status string
		reply          affinity.Reply
		cookie         string // the Set-Cookie written ("": none)
		counted        string // the re-binds reported
	}{
		{"the cookie as decided", "10.0.0.1:80", "200", affinity.Reply{SetCookie: "affinity=new"}, "affinity=new", ""},
		{"re-bound to the host that served", "10.0.0.2:80", "200", affinity.Reply{SetCookie: "affinity=rebound", Rebound: affinity.ReasonServedElsewhere, Pool: "web"}, "affinity=rebound", "web served-elsewhere"},
		{"a 5xx answer: its status told", "10.0.0.1:80", "503", affinity.Reply{}, "affinity=new", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dec := &fakeDecider{reply: tt.reply, d: affinity.Decision{Pool: "web", Outcome: affinity.OutcomeNew, Hosts: []string{"10.0.0.1:80", "10.0.0.2:80"}, SetCookie: "affinity=new"}}
			fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{requestHeaders(""), response(tt.served, tt.status)}}
			srv := NewServer(dec, nil)
			obs := &countingObserver{}
			srv.Observe(obs)
			if err := srv.Process(fs); err != nil {
				t.Fatal(err)
			}
			if len(dec.told) != 1 || dec.told[0].Served != tt.served || strconv.Itoa(dec.told[0].Status) != tt.status {
				t.Fatalf("told the decider %+v", dec.told)
			}
			if strings.Join(obs.rebound, ",") != tt.counted {
				t.Errorf("re-binds reported %v, want %q", obs.rebound, tt.counted)
			}
			set := fs.sent[1].GetResponseHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
			switch {
			case tt.cookie == "" && len(set) != 0:
				t.Errorf("wrote %v", set)
			case tt.cookie != "" && (len(set) != 1 || string(set[0].GetHeader().GetRawValue()) != tt.cookie || !set[0].GetAppend().GetValue()):
				t.Errorf("wrote %v, want %q appended", set, tt.cookie)
			}
		})
	}
}

// countingObserver records the re-binds the server reports.
type countingObserver struct{ rebound []string }

func (*countingObserver) StreamOpened()                            {}
func (*countingObserver) StreamClosed()                            {}
func (*countingObserver) Decided(affinity.Decision, time.Duration) {}
func (o *countingObserver) Rebound(pool string, r affinity.Reason) {
	o.rebound = append(o.rebound, pool+" "+r.String())
}

// TestProcessFailedOverResponse: a response-only stream (an established
// session Envoy routed by itself) is handed to the decider without a
// decision, with the pool, the request's cookies, the host that served and
// whether Envoy marked it as served elsewhere; the mark never reaches the
// client.
func TestProcessFailedOverResponse(t *testing.T) {
	response := func(marked bool) *extprocv3.ProcessingRequest {
		md, _ := structpb.NewStruct(map[string]any{ServedKey: "10.0.0.2:80", PrimaryKey: "10.0.0.1:80", KeyKey: "h:user-42"})
		attrs, _ := structpb.NewStruct(map[string]any{ClusterAttribute: "app", CookieAttribute: "a=1; affinity=tok"})
		headers := []*corev3.HeaderValue{{Key: StatusHeader, RawValue: []byte("200")}}
		if marked {
			headers = append(headers, &corev3.HeaderValue{Key: PrimaryHeader, RawValue: []byte("MTAuMC4wLjI6ODA=")})
		}
		return &extprocv3.ProcessingRequest{
			Request:         &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: headers}}},
			MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataNamespace: md}},
			Attributes:      map[string]*structpb.Struct{AttributesKey: attrs},
		}
	}
	for _, marked := range []bool{true, false} {
		dec := &fakeDecider{reply: affinity.Reply{SetCookie: "affinity=rebound", Rebound: affinity.ReasonServedElsewhere, Pool: "web"}}
		fs := &fakeStream{ctx: metadata.NewIncomingContext(context.Background(), metadata.Pairs(PoolMetadataKey, "web")), end: io.EOF,
			reqs: []*extprocv3.ProcessingRequest{response(marked)}}
		srv := NewServer(dec, nil)
		obs := &countingObserver{}
		srv.Observe(obs)
		if err := srv.Process(fs); err != nil {
			t.Fatal(err)
		}
		mut := fs.sent[0].GetResponseHeaders().GetResponse().GetHeaderMutation()
		if len(dec.told) != 1 {
			t.Fatalf("told %+v", dec.told)
		}
		up := dec.told[0]
		if up.Marked != marked || up.Pool != "web" || up.Cluster != "app" || up.Served != "10.0.0.2:80" || fmt.Sprint(up.RequestCookies) != "[a=1; affinity=tok]" ||
			up.Key != "h:user-42" || up.Primary != "10.0.0.1:80" {
			t.Fatalf("told %+v", up)
		}
		if !marked {
			if len(mut.GetRemoveHeaders()) != 0 {
				t.Fatalf("unmarked: removed %v", mut.GetRemoveHeaders())
			}
			continue
		}
		set := mut.GetSetHeaders()
		if len(set) != 1 || string(set[0].GetHeader().GetRawValue()) != "affinity=rebound" || !set[0].GetAppend().GetValue() {
			t.Fatalf("set %v", set)
		}
		if !slices.Equal(mut.GetRemoveHeaders(), []string{PrimaryHeader}) {
			t.Fatalf("removed %v, want the mark", mut.GetRemoveHeaders())
		}
		if fmt.Sprint(obs.rebound) != "[web served-elsewhere]" {
			t.Fatalf("re-binds reported %v", obs.rebound)
		}
	}
}

// TestProcessKeyInMetadata: a keyed decision leaves its key beside the
// override list in Envoy's metadata, where a marked response brings it back
// (with the primary) to re-bind it; a key that protobuf cannot carry (not
// UTF-8) or one too long to copy with every request is left out.
func TestProcessKeyInMetadata(t *testing.T) {
	for _, tt := range []struct {
		name, key string
		carried   bool
	}{
		{"header key", "h:user-42", true},
		{"no key (a cookie session)", "", false},
		{"not UTF-8", "h:\xff\xfe", false},
		{"too long", "h:" + strings.Repeat("k", MaxMetadataKey), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dec := &fakeDecider{d: affinity.Decision{Outcome: affinity.OutcomePinned, Hosts: []string{"10.0.0.1:80", "10.0.0.2:80"}, Key: tt.key}}
			fs := &fakeStream{ctx: context.Background(), end: io.EOF, reqs: []*extprocv3.ProcessingRequest{requestHeaders("app", ":path", "/")}}
			if err := NewServer(dec, nil).Process(fs); err != nil {
				t.Fatal(err)
			}
			lb := fs.sent[0].GetDynamicMetadata().GetFields()[MetadataNamespace].GetStructValue().GetFields()
			got, ok := lb[KeyKey]
			if ok != tt.carried || (ok && got.GetStringValue() != tt.key) {
				t.Fatalf("metadata key %v (%v), want carried %v", got, ok, tt.carried)
			}
			if lb[PrimaryKey].GetStringValue() != "10.0.0.1:80" {
				t.Fatalf("primary %v", lb[PrimaryKey])
			}
		})
	}
}
