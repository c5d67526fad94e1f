package extproc

import (
	"context"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// checkRequest is an ext_authz Check as Envoy sends it.
func checkRequest(pool string, headers map[string]string) *authv3.CheckRequest {
	attrs := &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: headers}}}
	if pool != "" {
		attrs.ContextExtensions = map[string]string{PoolContextKey: pool}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

func headerOf(opts []*corev3.HeaderValueOption, name string) (string, bool) {
	for _, o := range opts {
		if o.GetHeader().GetKey() == name {
			return o.GetHeader().GetValue(), true
		}
	}
	return "", false
}

// TestAuthzCheck: the ext_authz answer carries the same decision as the
// ext_proc one: the override list as the filter's metadata, a new
// session's cookie to add to the response, the application's headers, and
// a client's copies of host-naming headers removed.
func TestAuthzCheck(t *testing.T) {
	tests := []struct {
		name       string
		d          affinity.Decision
		pool       string
		headers    map[string]string
		wantPool   string
		wantMeta   string // x-gateway-destination-endpoint ("" = none)
		wantSet    string // Set-Cookie to add ("" = none)
		wantUp     map[string]string
		wantGone   []string
		wantDeny   int
		wantCookie []string
	}{
		{name: "new session", d: affinity.Decision{Outcome: affinity.OutcomeNew, Hosts: []string{"10.0.0.1:80", "10.0.0.2:80"}, SetCookie: "affinity=t; Path=/"},
			headers: map[string]string{":path": "/"}, wantMeta: "10.0.0.1:80,10.0.0.2:80", wantSet: "affinity=t; Path=/"},
		{name: "established, pool from the route", d: affinity.Decision{Outcome: affinity.OutcomePinned, OverrideList: "10.0.0.2:80,10.0.0.1:80"},
			pool: "shop", headers: map[string]string{"cookie": "a=b; affinity=t", "x-gateway-destination-endpoint": "6.6.6.6:1"},
			wantPool: "shop", wantMeta: "10.0.0.2:80,10.0.0.1:80", wantGone: []string{"x-gateway-destination-endpoint"}, wantCookie: []string{"a=b; affinity=t"}},
		{name: "rebound, the application told", d: affinity.Decision{Outcome: affinity.OutcomeRebound, Hosts: []string{"10.0.0.3:80"}, SetCookie: "affinity=u",
			SetHeaders: [][2]string{{"x-session-rebound", "host-left"}}},
			wantMeta: "10.0.0.3:80", wantSet: "affinity=u", wantUp: map[string]string{"x-session-rebound": "host-left"}},
		{name: "strict: the host is gone", d: affinity.Decision{Outcome: affinity.OutcomeRejected, Status: 503, Body: "gone", SetCookie: "affinity=; Max-Age=0"},
			wantDeny: 503, wantSet: "affinity=; Max-Age=0"},
		{name: "pass-through", d: affinity.Decision{Outcome: affinity.OutcomePassThrough}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDecider{d: tt.d}
			resp, err := NewAuthzServer(f).Check(context.Background(), checkRequest(tt.pool, tt.headers))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.seen[0]; got.Pool != tt.wantPool || !slices.Equal(got.CookieHeaders, tt.wantCookie) {
				t.Errorf("asked pool %q cookies %q, want %q %q", got.Pool, got.CookieHeaders, tt.wantPool, tt.wantCookie)
			}
			if tt.wantDeny != 0 {
				denied := resp.GetDeniedResponse()
				if resp.GetStatus().GetCode() == int32(codes.OK) || int(denied.GetStatus().GetCode()) != tt.wantDeny {
					t.Fatalf("answer %v, want a %d denial", resp, tt.wantDeny)
				}
				if v, _ := headerOf(denied.GetHeaders(), SetCookieHeader); v != tt.wantSet {
					t.Errorf("denial's Set-Cookie %q, want %q", v, tt.wantSet)
				}
				return
			}
			ok := resp.GetOkResponse()
			if resp.GetStatus().GetCode() != int32(codes.OK) || ok == nil {
				t.Fatalf("answer %v, want OK", resp)
			}
			if got := resp.GetDynamicMetadata().GetFields()[DestinationKey].GetStringValue(); got != tt.wantMeta {
				t.Errorf("metadata %s = %q, want %q", DestinationKey, got, tt.wantMeta)
			}
			if v, _ := headerOf(ok.GetResponseHeadersToAdd(), SetCookieHeader); v != tt.wantSet {
				t.Errorf("Set-Cookie %q, want %q", v, tt.wantSet)
			}
			for k, want := range tt.wantUp {
				if v, _ := headerOf(ok.GetHeaders(), k); v != want {
					t.Errorf("upstream header %s = %q, want %q", k, v, want)
				}
			}
			if !slices.Equal(ok.GetHeadersToRemove(), tt.wantGone) {
				t.Errorf("removed %q, want %q", ok.GetHeadersToRemove(), tt.wantGone)
			}
		})
	}
}
