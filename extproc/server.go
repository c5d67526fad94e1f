package extproc

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// Decider makes the affinity decision for a request, and judges what its
// response means; *affinity.Engine is one.
type Decider interface {
	// Decide places a request.
	Decide(affinity.Request) affinity.Decision
	// Respond is told what happened upstream to a request decided as d
	// (asked only when d.WantsResponse()) and returns what the response
	// carries back.
	Respond(d *affinity.Decision, up affinity.Upstream) affinity.Reply
}

var (
	_ Decider          = (*affinity.Engine)(nil)
	_ Observer         = noObserver{}
	_ affinity.Headers = headerList(nil)
)

// Observer is told what the server does, for metrics. Its methods are
// called on the hot path and must be cheap.
type Observer interface {
	// StreamOpened and StreamClosed bracket every stream.
	StreamOpened()
	StreamClosed()
	// Decided reports a decision and the time from the request-headers
	// message's arrival to its answer being ready.
	Decided(d affinity.Decision, took time.Duration)
	// Rebound reports a session re-bound in the response phase, to the
	// host that really served it.
	Rebound(pool string, reason affinity.Reason)
}

type noObserver struct{}

func (noObserver) StreamOpened()                            {}
func (noObserver) StreamClosed()                            {}
func (noObserver) Decided(affinity.Decision, time.Duration) {}
func (noObserver) Rebound(string, affinity.Reason)          {}

// Server implements Envoy's ExternalProcessor service.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	decider Decider
	log     *slog.Logger
	obs     Observer
	// answers holds the complete answer of an established session that
	// needs nothing but its hosts, by override list: the messages are
	// read-only once built, and gRPC may marshal one concurrently for many
	// streams. Bounded by the pools' host pairs; emptied if it grows past
	// maxAnswers.
	answersMu sync.RWMutex
	answers   map[answerKey]*extprocv3.ProcessingResponse
}

// answerKey identifies a shared answer: the override list and the headers
// it is written to (pools with the same hosts may name different ones).
type answerKey struct {
	override string
	output   affinity.OutputHeaders
}

const maxAnswers = 65536

// NewServer returns a server that asks decider where each request goes.
func NewServer(decider Decider, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{decider: decider, log: log, obs: noObserver{}}
}

// Observe makes the server report to obs (before it serves).
func (s *Server) Observe(obs Observer) { s.obs = obs }

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

// skipResponse switches off the response-headers message for this request:
// an established session needs one message, not two.
var skipResponse = &filterv3.ProcessingMode{ResponseHeaderMode: filterv3.ProcessingMode_SKIP}

func (ex *exchange) requestHeaders(s *Server, req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	start := time.Now()
	d, resp := ex.decide(s, req, h)
	s.obs.Decided(d, time.Since(start))
	return resp
}

func (ex *exchange) decide(s *Server, req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) (affinity.Decision, *extprocv3.ProcessingResponse) {
	headers := h.GetHeaders().GetHeaders()
	areq := affinity.Request{
		Pool:          ex.pool,
		Cluster:       attribute(req, ClusterAttribute),
		SourceAddress: attribute(req, SourceAttribute),
		Headers:       headerList(headers),
	}
	var remove []string
	for _, hv := range headers {
		key := hv.GetKey()
		switch {
		case strings.EqualFold(key, CookieHeader):
			areq.CookieHeaders = append(areq.CookieHeaders, headerValue(hv))
		case isSpoofable(key):
			remove = append(remove, strings.ToLower(key))
		}
	}
	d := s.decider.Decide(areq)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("decision", "pool", d.Pool, "outcome", d.Outcome.String(), "reason", d.Reason.String(), "host", d.HostID, "hosts", d.Hosts)
	}

	if d.Outcome == affinity.OutcomeRejected {
		return d, rejection(d)
	}
	if d.OverrideList != "" && len(remove) == 0 && len(d.SetHeaders) == 0 && len(d.RemoveHeaders) == 0 && !d.WantsResponse() {
		return d, s.sharedAnswer(d.OverrideList, d.Output)
	}
	override := d.OverrideList
	if override == "" && len(d.Hosts) > 0 {
		override = strings.Join(d.Hosts, ",")
	}
	remove = append(remove, d.RemoveHeaders...)
	var set []*corev3.HeaderValueOption
	for _, kv := range d.SetHeaders {
		set = append(set, setHeader(kv[0], kv[1]))
	}
	if override != "" {
		set = outputHeaders(set, d.Output, override)
	}
	common := &extprocv3.CommonResponse{}
	if len(remove) > 0 || len(set) > 0 {
		common.HeaderMutation = &extprocv3.HeaderMutation{RemoveHeaders: remove, SetHeaders: set}
	}
	resp := &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: common}},
	}
	if override != "" {
		resp.DynamicMetadata = destinationMetadata(override)
	}
	if d.WantsResponse() {
		// A copy: taking d's address would put every decision on the heap.
		ex.decision = new(affinity.Decision)
		*ex.decision = d
	} else {
		resp.ModeOverride = skipResponse
	}
	return d, resp
}

// sharedAnswer is the answer shared by established sessions with nothing
// to change but where they go: the metadata, and the output headers
// written over any client copy.
func (s *Server) sharedAnswer(override string, output affinity.OutputHeaders) *extprocv3.ProcessingResponse {
	key := answerKey{override, output}
	s.answersMu.RLock()
	resp, ok := s.answers[key]
	s.answersMu.RUnlock()
	if ok {
		return resp
	}
	common := &extprocv3.CommonResponse{}
	if set := outputHeaders(nil, output, override); len(set) > 0 {
		common.HeaderMutation = &extprocv3.HeaderMutation{SetHeaders: set}
	}
	resp = &extprocv3.ProcessingResponse{
		Response:        &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: common}},
		DynamicMetadata: destinationMetadata(override),
		ModeOverride:    skipResponse,
	}
	s.answersMu.Lock()
	if s.answers == nil || len(s.answers) >= maxAnswers {
		s.answers = map[answerKey]*extprocv3.ProcessingResponse{}
	}
	s.answers[key] = resp
	s.answersMu.Unlock()
	return resp
}

// outputHeaders appends the output headers of a decision whose override
// list is override: the list itself, and base64 of its primary as Envoy's
// header session state decodes it (standard alphabet, padded).
func outputHeaders(set []*corev3.HeaderValueOption, out affinity.OutputHeaders, override string) []*corev3.HeaderValueOption {
	if out.Header != "" {
		set = append(set, setHeader(out.Header, override))
	}
	if out.StatefulSession != "" {
		primary, _, _ := strings.Cut(override, ",")
		set = append(set, setHeader(out.StatefulSession, base64.StdEncoding.EncodeToString([]byte(primary))))
	}
	return set
}

// setHeader sets a request header, replacing every copy the request has:
// append left unset is false, which Envoy applies as replace-all.
func setHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, RawValue: []byte(value)}}
}

// rejection answers the request in Envoy's place (a strict pool whose
// session lost its host), clearing the session cookie.
func rejection(d affinity.Decision) *extprocv3.ProcessingResponse {
	set := []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "content-type", RawValue: []byte("text/plain; charset=utf-8")}}}
	if d.SetCookie != "" {
		set = append(set, setCookie(d.SetCookie))
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: set},
		Body:    []byte(d.Body),
		Details: "envoy_affinity_session_host_gone",
	}}}
}

// setCookie appends a Set-Cookie header: append, or the application's own
// Set-Cookie would be replaced.
func setCookie(v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: SetCookieHeader, RawValue: []byte(v)},
		// The deprecated append field on purpose: ext_proc ignores
		// append_action and honours only this one.
		Append: wrapperspb.Bool(true),
	}
}

func (ex *exchange) responseHeaders(s *Server, req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	up, marked := upstream(req, h)
	var reply affinity.Reply
	switch d := ex.decision; {
	case d != nil:
		reply = s.decider.Respond(d, up)
		ex.decision = nil
	default:
		// A response of a session Envoy routed by itself: marked when
		// another host than its primary served it.
		up.Pool, up.Cluster, up.Marked = ex.pool, attribute(req, ClusterAttribute), marked
		if c := attribute(req, CookieAttribute); c != "" {
			up.RequestCookies = []string{c}
		}
		reply = s.decider.Respond(nil, up)
	}
	if reply.Rebound != affinity.ReasonNone {
		s.obs.Rebound(reply.Pool, reply.Rebound)
	}
	common := &extprocv3.CommonResponse{}
	if reply.SetCookie != "" || len(reply.SetHeaders) > 0 || marked {
		common.HeaderMutation = &extprocv3.HeaderMutation{}
	}
	if reply.SetCookie != "" {
		common.HeaderMutation.SetHeaders = []*corev3.HeaderValueOption{setCookie(reply.SetCookie)}
	}
	for _, kv := range reply.SetHeaders {
		common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders, setHeader(kv[0], kv[1]))
	}
	if marked {
		// The mark is for Envoy and the service, not the client.
		common.HeaderMutation.RemoveHeaders = []string{PrimaryHeader}
	}
	return &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{Response: common}},
	}
}

// upstream reads what Envoy tells of the response: the host that served it
// (override_host's selected_host_key, forwarded in the envoy.lb metadata),
// its status and its Set-Cookie headers; and whether the route marked it as
// failed over.
func upstream(req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) (up affinity.Upstream, marked bool) {
	up.Served = req.GetMetadataContext().GetFilterMetadata()[MetadataNamespace].GetFields()[ServedKey].GetStringValue()
	up.Headers = headerList(h.GetHeaders().GetHeaders())
	for _, hv := range h.GetHeaders().GetHeaders() {
		switch key := hv.GetKey(); {
		case key == StatusHeader:
			up.Status, _ = strconv.Atoi(headerValue(hv))
		case strings.EqualFold(key, SetCookieHeader):
			up.SetCookies = append(up.SetCookies, headerValue(hv))
		case strings.EqualFold(key, PrimaryHeader):
			marked = true
		}
	}
	return up, marked
}

// headerList reads the request's headers for the key sources.
type headerList []*corev3.HeaderValue

// Get returns the first value of the named header (name in lower case).
func (l headerList) Get(name string) (string, bool) {
	for _, hv := range l {
		if strings.EqualFold(hv.GetKey(), name) {
			return headerValue(hv), true
		}
	}
	return "", false
}

// destinationMetadata is {envoy.lb: {x-gateway-destination-endpoint:
// hosts, x-affinity-primary: the first of them}}.
func destinationMetadata(hosts string) *structpb.Struct {
	primary, _, _ := strings.Cut(hosts, ",")
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		MetadataNamespace: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			DestinationKey: structpb.NewStringValue(hosts),
			PrimaryKey:     structpb.NewStringValue(primary),
		}}),
	}}
}

// headerValue prefers raw_value, where Envoy puts header values.
func headerValue(h *corev3.HeaderValue) string {
	if len(h.GetRawValue()) > 0 {
		return string(h.GetRawValue())
	}
	return h.GetValue()
}

func isSpoofable(key string) bool {
	for _, s := range spoofableHeaders {
		if strings.EqualFold(key, s) {
			return true
		}
	}
	return false
}

// attribute returns a string request attribute Envoy sent, or "".
func attribute(req *extprocv3.ProcessingRequest, name string) string {
	attrs, ok := req.GetAttributes()[AttributesKey]
	if !ok {
		return ""
	}
	return attrs.GetFields()[name].GetStringValue()
}
