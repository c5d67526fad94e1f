package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
)

// TestLoadMetrics: a pool with a load block reports its signal's freshness,
// each host's load and the reads; a pool without one adds no series.
func TestLoadMetrics(t *testing.T) {
	cfg, err := affinity.ParseConfig("c.yaml", []byte("keys: {env: K}\npools:\n"+
		"  - name: app\n    load: {envoy_admins: ['127.0.0.1:1'], stale_after: 10s}\n    hosts: [{name: web-1, address: '127.0.0.1:1'}, {name: web-2, address: '127.0.0.2:1'}]\n"+
		"  - name: plain\n    hosts: [{name: web-3, address: '127.0.0.3:1'}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := affinity.ParseKeyring(testkit.Key)
	engine := affinity.NewEngine(cfg.Build(ring), nil)
	scrape := func() string {
		rec := httptest.NewRecorder()
		New(engine, noDiscovery{}, someLoadReads{}, nil).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	tests := []struct {
		name      string
		at        time.Time // zero: no reading
		want, not []string
	}{
		{name: "no reading yet", want: []string{`envoy_affinity_load_signal_fresh{pool="app"} 0`, `envoy_affinity_load_reads_total{pool="app"} 2`},
			not: []string{"envoy_affinity_host_load{"}},
		{name: "fresh", at: time.Now(), want: []string{`envoy_affinity_load_signal_fresh{pool="app"} 1`,
			`envoy_affinity_host_load{host="web-1",pool="app"} 4`, `envoy_affinity_host_load{host="web-2",pool="app"} 0`,
			`envoy_affinity_load_read_errors_total{pool="app"} 1`}},
		{name: "stale", at: time.Now().Add(-time.Minute), want: []string{`envoy_affinity_load_signal_fresh{pool="app"} 0`,
			`envoy_affinity_host_load{host="web-1",pool="app"} 4`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.at.IsZero() {
				engine.SetLoad("app", map[string]float64{"127.0.0.1:1": 4}, tt.at)
			}
			out := scrape()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("no %s", w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out, n) {
					t.Errorf("unexpected %s", n)
				}
			}
			for line := range strings.Lines(out) {
				if (strings.HasPrefix(line, "envoy_affinity_load_") || strings.HasPrefix(line, "envoy_affinity_host_load")) && strings.Contains(line, `pool="plain"`) {
					t.Errorf("a pool without a load block has %s", line)
				}
			}
		})
	}
}
