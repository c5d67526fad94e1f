// The request phase: the request headers become an affinity.Request, the
// decision becomes the answer Envoy acts on (hosts in dynamic metadata,
// header changes, or an immediate response).

package extproc

import (
	"context"
	"encoding/base64"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// skipResponse switches off the response-headers message for this request:
// an established session needs one message, not two.
var skipResponse = &filterv3.ProcessingMode{ResponseHeaderMode: filterv3.ProcessingMode_SKIP}

// requestHeaders answers the request-headers message and reports the
// decision with the time it took.
func (ex *exchange) requestHeaders(s *Server, req *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	start := time.Now()
	d, resp := ex.decide(s, req, h)
	s.obs.Decided(d, time.Since(start))
	return resp
}

// decide asks the Decider where the request goes and builds the answer:
// the shared answer of an established session, an immediate response, or
// metadata and header changes of its own.
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
		// Protobuf strings must be UTF-8: a key that is not cannot be
		// carried (and is not re-bound on failover).
		if d.Key != "" && len(d.Key) <= MaxMetadataKey && utf8.ValidString(d.Key) {
			resp.DynamicMetadata.Fields[MetadataNamespace].GetStructValue().Fields[KeyKey] = structpb.NewStringValue(d.Key)
		}
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

// answerKey identifies a shared answer: the override list and the headers
// it is written to (pools with the same hosts may name different ones).
type answerKey struct {
	override string
	output   affinity.OutputHeaders
}

const maxAnswers = 65536

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

func isSpoofable(key string) bool {
	for _, s := range spoofableHeaders {
		if strings.EqualFold(key, s) {
			return true
		}
	}
	return false
}
