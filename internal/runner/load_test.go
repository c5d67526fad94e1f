package runner

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
)

// fakeLoads records the readings it is handed and answers freshness as
// told.
type fakeLoads struct {
	set   chan map[string]float64
	fresh bool
}

func (f *fakeLoads) SetLoad(_ string, byAddress map[string]float64, _ time.Time) { f.set <- byAddress }
func (f *fakeLoads) LoadFresh(string, time.Time) bool                            { return f.fresh }

// envoyAdmin serves /clusters?format=json with the given rq_active per host
// of cluster app; a nil map answers 503.
func envoyAdmin(t *testing.T, load map[string]int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if load == nil || r.URL.Path != "/clusters" {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var hosts []string
		for addr, n := range load {
			ip, port, _ := strings.Cut(addr, ":")
			hosts = append(hosts, fmt.Sprintf(`{"address":{"socket_address":{"address":%q,"port_value":%s}},"stats":[{"name":"rq_active","type":"GAUGE","value":"%d"}]}`, ip, port, n))
		}
		fmt.Fprintf(w, `{"cluster_statuses":[{"name":"app","host_statuses":[%s]}]}`, strings.Join(hosts, ","))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestLoadRound: the Envoys' counts are summed by host; an Envoy that fails
// is left out and counted; when every one fails nothing is set.
func TestLoadRound(t *testing.T) {
	a := envoyAdmin(t, map[string]int{"10.0.0.1:80": 3, "10.0.0.2:80": 1})
	b := envoyAdmin(t, map[string]int{"10.0.0.1:80": 2, "10.0.0.3:80": 4})
	down := envoyAdmin(t, nil)
	tests := []struct {
		name          string
		admins        []string
		want          map[string]float64 // nil: nothing set
		reads, errors uint64
	}{
		{"two Envoys summed", []string{a, b}, map[string]float64{"10.0.0.1:80": 5, "10.0.0.2:80": 1, "10.0.0.3:80": 4}, 2, 0},
		{"one down: the other's", []string{a, down}, map[string]float64{"10.0.0.1:80": 3, "10.0.0.2:80": 1}, 1, 1},
		{"all down: nothing", []string{down, "http://" + down}, nil, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine := &fakeLoads{set: make(chan map[string]float64, 1)}
			r := &loadReader{engine: engine, pool: "app", stats: &loadStats{}, client: &http.Client{Timeout: 5 * time.Second},
				src: affinity.LoadSource{Admins: strings.Join(tt.admins, ","), Cluster: "app", Interval: time.Second}, log: slog.New(slog.DiscardHandler)}
			r.round(context.Background())
			var got map[string]float64
			select {
			case got = <-engine.set:
			default:
			}
			if !maps.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("set %v, want %v", got, tt.want)
			}
			if r.stats.reads.Load() != tt.reads || r.stats.errors.Load() != tt.errors {
				t.Errorf("reads %d errors %d, want %d and %d", r.stats.reads.Load(), r.stats.errors.Load(), tt.reads, tt.errors)
			}
		})
	}
}

// TestLoadFreshnessLogged: a change of freshness is logged once.
func TestLoadFreshnessLogged(t *testing.T) {
	var logs bytes.Buffer
	engine := &fakeLoads{set: make(chan map[string]float64, 10)}
	r := &loadReader{engine: engine, pool: "app", stats: &loadStats{}, client: &http.Client{Timeout: 5 * time.Second},
		src: affinity.LoadSource{Admins: envoyAdmin(t, nil), Cluster: "app", Interval: time.Second}, log: slog.New(slog.NewTextHandler(&logs, nil))}
	for _, fresh := range []bool{false, true, true, false, false, true} {
		engine.fresh = fresh
		r.round(context.Background())
	}
	got := strings.Count(logs.String(), "load signal fresh") + 10*strings.Count(logs.String(), "load signal stale")
	if got != 2+10*1 {
		t.Fatalf("want two fresh and one stale line:\n%s", logs.String())
	}
}

// TestLoadsReconcile: a pool with a load block gets a reader that hands its
// readings to the engine and reports its reads; it stops with the context.
func TestLoadsReconcile(t *testing.T) {
	admin := envoyAdmin(t, map[string]int{"127.0.0.1:1": 7})
	cfg, err := affinity.ParseConfig("c.yaml", []byte("keys: {env: K}\npools:\n  - name: app\n    load: {envoy_admins: ['"+admin+"'], interval: 100ms}\n    hosts: [{address: '127.0.0.1:1'}]\n  - name: other\n    hosts: [{address: '127.0.0.1:2'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := affinity.ParseKeyring(testkit.Key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	engine := &fakeLoads{set: make(chan map[string]float64, 100)}
	l := NewLoads(ctx, engine, nil)
	l.Reconcile(cfg.Build(ring))
	if got := <-engine.set; got["127.0.0.1:1"] != 7 {
		t.Fatalf("reading %v", got)
	}
	if s, ok := l.Status("app"); !ok || s.Reads == 0 {
		t.Fatalf("status %+v %v", s, ok)
	}
	if _, ok := l.Status("other"); ok {
		t.Fatal("a pool without a load block has a reader")
	}
	cancel()
	l.Wait()
}

// TestSmooth: a reading at or above the previous value counts as it is, a
// lower one half the way down; a host that appears starts at its reading,
// one that is gone decays to 0.
func TestSmooth(t *testing.T) {
	tests := []struct {
		name          string
		prev, reading map[string]float64
		want          map[string]float64
	}{
		{"first reading as it is", nil, map[string]float64{"a": 8, "b": 4}, map[string]float64{"a": 8, "b": 4}},
		{"up at once, down halfway", map[string]float64{"a": 8, "b": 4}, map[string]float64{"a": 6, "b": 6}, map[string]float64{"a": 7, "b": 6}},
		{"a new host starts at its reading", map[string]float64{"a": 8}, map[string]float64{"a": 8, "c": 0}, map[string]float64{"a": 8, "c": 0}},
		{"a host the reading lacks decays", map[string]float64{"a": 8, "b": 4}, map[string]float64{"a": 8}, map[string]float64{"a": 8, "b": 2}},
		{"until it is gone", map[string]float64{"a": 8, "b": 0.015}, map[string]float64{"a": 8}, map[string]float64{"a": 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := smooth(tt.prev, tt.reading); !maps.Equal(got, tt.want) {
				t.Fatalf("smooth(%v, %v) = %v, want %v", tt.prev, tt.reading, got, tt.want)
			}
		})
	}
}
