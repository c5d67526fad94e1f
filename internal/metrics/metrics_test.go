package metrics

import (
	"flag"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"github.com/envoy-affinity/envoy-affinity/internal/poolstate"
	"github.com/envoy-affinity/envoy-affinity/internal/testkit"
	"github.com/envoy-affinity/envoy-affinity/internal/tlsreload"
)

// noDiscovery: no pool has a discovery.
type noDiscovery struct{}

func (noDiscovery) Status(string) (poolstate.Discovery, bool) { return poolstate.Discovery{}, false }

// someLoadReads: every pool's load reader has read twice, failed once.
type someLoadReads struct{}

func (someLoadReads) Status(string) (poolstate.Load, bool) {
	return poolstate.Load{Reads: 2, Errors: 1}, true
}

var update = flag.Bool("update", false, "rewrite the golden files")

// TestMetricsGolden pins the metric names, types and label names: a change
// to them is a change for every dashboard and alert, so it must be made on
// purpose (go test -run TestMetricsGolden -update).
func TestMetricsGolden(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "keys.txt"), testkit.Key+"\n")
	testkit.WriteFile(t, filepath.Join(dir, "c.yaml"), "keys: {file: keys.txt}\npools:\n  - mode: opaque\n    bounded_load: {}\n    load: {envoy_admins: ['127.0.0.1:1']}\n    hosts: [{name: web-1, address: '127.0.0.1:1'}, {name: web-2, address: '127.0.0.2:1', draining_until: 2099-01-01T00:00:00Z}]\n")
	snap, err := affinity.LoadFile(filepath.Join(dir, "c.yaml"), os.Getenv, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	engine := affinity.NewEngine(snap, nil)
	// With TLS on, so that its metrics are pinned too.
	ca, err := launch.NewCA("metrics test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Server("envoy-affinity.internal")
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, filepath.Join(dir, "tls.crt"), string(cert.CertPEM))
	testkit.WriteFile(t, filepath.Join(dir, "tls.key"), string(cert.KeyPEM))
	certs, err := tlsreload.Load("gRPC", tlsreload.Files{Cert: tlsreload.File{Path: filepath.Join(dir, "tls.crt")}, Key: tlsreload.File{Path: filepath.Join(dir, "tls.key")}},
		nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// With a shared store (not started: its metrics exist before Redis
	// answers), so that its metrics are pinned too.
	shared, err := redisstore.New(affinity.RedisConfig{Mode: affinity.RedisSingle, Addresses: []string{"127.0.0.1:1"}, KeyPrefix: "t:",
		Timeout: time.Millisecond, TouchInterval: time.Minute, SyncInterval: time.Second}, affinity.NewMemoryStore(10, time.Hour), time.Hour, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	engine.SetLoad("default", map[string]float64{"127.0.0.1:1": 3}, time.Now())
	m := New(engine, noDiscovery{}, someLoadReads{}, shared, certs)
	m.StreamOpened()
	m.Decided(engine.Decide(affinity.Request{}), 3*time.Microsecond)
	m.ConfigReloaded()
	m.ConfigRefused()
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	runtime := map[string]bool{}
	for _, f := range families {
		// The Go runtime's and the process's own metrics are the client
		// library's (their set follows the Go release): present, not pinned.
		if !strings.HasPrefix(f.GetName(), namespace+"_") {
			runtime[f.GetName()] = true
			continue
		}
		var labels []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		lines = append(lines, f.GetName()+" "+strings.ToLower(f.GetType().String())+" {"+strings.Join(labels, ",")+"}")
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !runtime[name] {
			t.Errorf("no %s", name)
		}
	}
	slices.Sort(lines)
	got := strings.Join(lines, "\n") + "\n"
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("metrics changed:\n%s\nwant:\n%s", got, want)
	}
}

// BenchmarkMetricsDecided is what metrics add to each decision.
func BenchmarkMetricsDecided(b *testing.B) {
	cfg, _ := affinity.ParseConfig("b.yaml", []byte("keys: {env: K}\npools:\n  - hosts: [{address: '127.0.0.1:1'}]\n"))
	ring, _ := affinity.ParseKeyring(testkit.Key)
	engine := affinity.NewEngine(cfg.Build(ring), nil)
	m := New(engine, noDiscovery{}, nil, nil)
	d := affinity.Decision{Outcome: affinity.OutcomePinned, Pool: "default"}
	b.ReportAllocs()
	for b.Loop() {
		m.Decided(d, time.Microsecond)
	}
}

// TestEnvoyExamined: the doctor's examinations feed the envoy_config
// metrics: problems by severity, examinations by result.
func TestEnvoyExamined(t *testing.T) {
	cfg, _ := affinity.ParseConfig("b.yaml", []byte("keys: {env: K}\npools:\n  - hosts: [{address: '127.0.0.1:1'}]\n"))
	ring, _ := affinity.ParseKeyring(testkit.Key)
	m := New(affinity.NewEngine(cfg.Build(ring), nil), noDiscovery{}, nil, nil)
	m.EnvoyExamined(&doctor.Report{Problems: []doctor.Problem{{Severity: doctor.Error}, {Severity: doctor.Warning}, {Severity: doctor.Warning}}})
	m.EnvoyUnreachable()
	m.EnvoyUnreachable()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`envoy_affinity_envoy_config_problems{severity="error"} 1`,
		`envoy_affinity_envoy_config_problems{severity="warning"} 2`,
		`envoy_affinity_envoy_config_checks_total{result="checked"} 1`,
		`envoy_affinity_envoy_config_checks_total{result="unreachable"} 2`,
	} {
		if !strings.Contains(rec.Body.String(), want+"\n") {
			t.Errorf("no %s in:\n%s", want, rec.Body.String())
		}
	}
}
