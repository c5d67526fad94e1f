package extproc

import (
	"context"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// AuthzFilterName is Envoy's ext_authz HTTP filter: the namespace its
// dynamic metadata (the decision) is written to.
const AuthzFilterName = "envoy.filters.http.ext_authz"

// PoolContextKey is the ext_authz context extension (check_settings.
// context_extensions, per route) that names the pool; without it the pool
// without a name takes the request.
const PoolContextKey = "pool"

// AuthzServer answers Envoy's ext_authz Check with the same decisions: one
// unary call per request, the override list as the filter's dynamic
// metadata, a new session's cookie as a response header to add.
type AuthzServer struct {
	authv3.UnimplementedAuthorizationServer
	decider Decider
	obs     Observer
}

// NewAuthzServer returns an ext_authz server asking decider.
func NewAuthzServer(decider Decider) *AuthzServer {
	return &AuthzServer{decider: decider, obs: noObserver{}}
}

// Observe makes the server report to obs (before it serves).
func (s *AuthzServer) Observe(obs Observer) { s.obs = obs }

// mapHeaders reads ext_authz's header map (lower-case keys).
type mapHeaders map[string]string

func (m mapHeaders) Get(name string) (string, bool) {
	v, ok := m[name]
	return v, ok
}

// Check implements authv3.AuthorizationServer.
func (s *AuthzServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	attrs := req.GetAttributes()
	headers := attrs.GetRequest().GetHttp().GetHeaders()
	areq := affinity.Request{
		Pool:    attrs.GetContextExtensions()[PoolContextKey],
		Headers: mapHeaders(headers),
	}
	if sa := attrs.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		areq.SourceAddress = sa.GetAddress()
	}
	if c, ok := headers[CookieHeader]; ok {
		areq.CookieHeaders = []string{c}
	}
	var remove []string
	for key := range headers {
		if isSpoofable(key) {
			remove = append(remove, key)
		}
	}
	d := s.decider.Decide(areq)
	defer func() { s.obs.Decided(d, time.Since(start)) }()
	if d.Outcome == affinity.OutcomeRejected {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.Unavailable)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
				Headers: []*corev3.HeaderValueOption{authzHeader(SetCookieHeader, d.SetCookie, true)},
				Body:    d.Body,
			}},
		}, nil
	}
	ok := &authv3.OkHttpResponse{HeadersToRemove: append(remove, d.RemoveHeaders...)}
	override := d.OverrideList
	if override == "" && len(d.Hosts) > 0 {
		override = strings.Join(d.Hosts, ",")
	}
	for _, kv := range d.SetHeaders {
		ok.Headers = append(ok.Headers, authzHeader(kv[0], kv[1], false))
	}
	resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}}
	if override != "" {
		for _, h := range outputHeaders(nil, d.Output, override) {
			ok.Headers = append(ok.Headers, authzHeader(h.Header.Key, string(h.Header.RawValue), false))
		}
		primary, _, _ := strings.Cut(override, ",")
		resp.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			DestinationKey: structpb.NewStringValue(override),
			PrimaryKey:     structpb.NewStringValue(primary),
		}}
	}
	if d.SetCookie != "" {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, authzHeader(SetCookieHeader, d.SetCookie, true))
	}
	return resp, nil
}

// authzHeader is a header for ext_authz, which reads value, not raw_value.
func authzHeader(name, value string, add bool) *corev3.HeaderValueOption {
	action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	if add {
		action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	}
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}, AppendAction: action}
}
