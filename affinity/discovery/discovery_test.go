package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

const clustersJSON = `{"cluster_statuses":[
 {"name":"other","host_statuses":[{"address":{"socket_address":{"address":"10.0.0.9","port_value":80}},"health_status":{"eds_health_status":"HEALTHY"},"weight":1}]},
 {"name":"app","host_statuses":[
  {"address":{"socket_address":{"address":"10.0.0.2","port_value":80}},"hostname":"web-2","health_status":{"eds_health_status":"HEALTHY"},"weight":3},
  {"address":{"socket_address":{"address":"10.0.0.1","port_value":80}},"health_status":{"eds_health_status":"HEALTHY"}},
  {"address":{"socket_address":{"address":"10.0.0.3","port_value":80}},"health_status":{"failed_active_health_check":true,"eds_health_status":"HEALTHY"},"weight":1},
  {"address":{"socket_address":{"address":"10.0.0.4","port_value":80}},"health_status":{"failed_outlier_check":true,"eds_health_status":"HEALTHY"},"weight":1},
  {"address":{"socket_address":{"address":"10.0.0.5","port_value":80}},"health_status":{"eds_health_status":"UNHEALTHY"},"weight":1},
  {"address":{"socket_address":{"address":"10.0.0.6","port_value":80}},"hostname":"not a name","health_status":{"eds_health_status":"DRAINING"},"weight":1}
 ]}]}`

func TestEnvoyAdmin(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/clusters" || r.URL.Query().Get("format") != "json" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, clustersJSON)
	}))
	defer srv.Close()
	src := NewEnvoyAdmin(srv.URL, "app", time.Minute)
	before := time.Now()
	hosts, err := src.Hosts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []affinity.HostSpec{
		{Address: "10.0.0.1:80", Weight: 1},
		{Name: "web-2", Address: "10.0.0.2:80", Weight: 3},
		{Address: "10.0.0.6:80", Weight: 1},
	}
	if len(hosts) != len(want) {
		t.Fatalf("hosts %+v", hosts)
	}
	for i := range want {
		if hosts[i].Address != want[i].Address || hosts[i].Name != want[i].Name || hosts[i].Weight != want[i].Weight {
			t.Errorf("host %d: %+v, want %+v", i, hosts[i], want[i])
		}
	}
	if d := hosts[2].DrainingUntil; d.Before(before.Add(time.Minute)) || d.After(time.Now().Add(time.Minute)) {
		t.Errorf("draining host's deadline %v", d)
	}
	// The deadline counts from when draining was first seen.
	again, _ := src.Hosts(context.Background())
	if !again[2].DrainingUntil.Equal(hosts[2].DrainingUntil) {
		t.Errorf("deadline moved: %v then %v", hosts[2].DrainingUntil, again[2].DrainingUntil)
	}
	if _, err := NewEnvoyAdmin(srv.URL, "missing", time.Minute).Hosts(context.Background()); err == nil {
		t.Error("a missing cluster gave no error")
	}
}

// scripted answers in turn, then repeats the last.
type scripted struct {
	mu      sync.Mutex
	answers []answer
	reads   int
}

type answer struct {
	hosts []affinity.HostSpec
	err   error
}

func (s *scripted) Hosts(context.Context) ([]affinity.HostSpec, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.answers[min(s.reads, len(s.answers)-1)]
	s.reads++
	return a.hosts, a.err
}

func TestRunKeepsTheLastGoodList(t *testing.T) {
	one := []affinity.HostSpec{{Address: "10.0.0.1:80", Weight: 1}}
	two := []affinity.HostSpec{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.2:80", Weight: 1}}
	src := &scripted{answers: []answer{{hosts: one}, {err: errors.New("timeout")}, {hosts: nil}, {hosts: one}, {hosts: two}}}
	applied := make(chan []affinity.HostSpec, 10)
	var stats Stats
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, src, 5*time.Millisecond, func(h []affinity.HostSpec) { applied <- h }, &stats, slog.New(slog.DiscardHandler))
		close(done)
	}()
	first, second := <-applied, <-applied
	cancel()
	<-done
	if len(first) != 1 || len(second) != 2 {
		t.Fatalf("applied %v then %v; want one host, then two (errors, empty and unchanged answers not applied)", first, second)
	}
	if stats.Errors.Load() != 2 || stats.Refreshes.Load() < 3 {
		t.Fatalf("errors %d, refreshes %d", stats.Errors.Load(), stats.Refreshes.Load())
	}
}
