// The response phase: what Envoy tells of the response goes to
// Decider.Respond, and its reply becomes the changes to the response headers.

package extproc

import (
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// responseHeaders answers the response-headers message: the response of a
// decision that asked for it, or of a session Envoy routed by itself.
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
	lb := req.GetMetadataContext().GetFilterMetadata()[MetadataNamespace].GetFields()
	up.Served = lb[ServedKey].GetStringValue()
	up.Key, up.Primary = lb[KeyKey].GetStringValue(), lb[PrimaryKey].GetStringValue()
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
