package discovery

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRequestsInFlight: rq_active of each host of the cluster, written as
// Envoy writes it (a string, left out when 0).
func TestRequestsInFlight(t *testing.T) {
	const body = `{"cluster_statuses":[
 {"name":"other","host_statuses":[{"address":{"socket_address":{"address":"10.0.0.1","port_value":80}},"stats":[{"name":"rq_active","type":"GAUGE","value":"99"}]}]},
 {"name":"app","host_statuses":[
  {"address":{"socket_address":{"address":"10.0.0.1","port_value":80}},"stats":[{"name":"cx_total","value":"12"},{"name":"rq_active","type":"GAUGE","value":"7"}]},
  {"address":{"socket_address":{"address":"10.0.0.2","port_value":80}},"stats":[{"name":"rq_active","type":"GAUGE"}]},
  {"address":{"socket_address":{"address":"::1","port_value":81}},"stats":[{"name":"rq_active","type":"GAUGE","value":3}]}
 ]}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/clusters" || r.URL.Query().Get("format") != "json" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	tests := []struct {
		cluster string
		want    map[string]float64
		err     bool
	}{
		{cluster: "app", want: map[string]float64{"10.0.0.1:80": 7, "10.0.0.2:80": 0, "[::1]:81": 3}},
		{cluster: "none", err: true},
	}
	for _, tt := range tests {
		got, err := RequestsInFlight(context.Background(), srv.Client(), srv.URL, tt.cluster)
		if (err != nil) != tt.err || !maps.Equal(got, tt.want) {
			t.Errorf("%s: %v (%v), want %v", tt.cluster, got, err, tt.want)
		}
	}
}
