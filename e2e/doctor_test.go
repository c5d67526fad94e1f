package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
	"github.com/envoy-affinity/envoy-affinity/internal/envoytree"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// tree is a YAML document decoded into maps and lists, for editing.
type tree = envoytree.Tree

const extProcFilter = "envoy.filters.http.ext_proc"

// doctorCase puts one problem back into an Envoy configuration that has the
// pieces of envoy-config merged in (or into the service's configuration),
// which the doctor must report.
type doctorCase struct {
	check string
	mode  string // the pool's mode (verified when empty)
	envoy func(t *testing.T, y tree)
	// config edits the service's configuration the doctor reads (its one pool).
	config func(t *testing.T, pool tree, cfg tree)
	// live: only a running Envoy shows it (health, the JWKS it fetches).
	live bool
	// base edits the pool the merged Envoy is generated for (and the
	// doctor reads), before config.
	base func(t *testing.T, pool tree, cfg tree)
}

// envelopePool makes the pool's session an application header the
// upstream starts, in a signed envelope.
func envelopePool(_ *testing.T, pool, _ tree) {
	pool["key_sources"] = []any{tree{"type": "upstream_header", "name": "X-Session-Id", "envelope": "signed"}}
}

// headerPool keys the pool's sessions by a request header alone.
func headerPool(_ *testing.T, pool, _ tree) {
	pool["key_sources"] = []any{tree{"type": "header", "name": "x-session-id"}}
}

// both applies edits in order (nil ones skipped).
func both(edits ...func(*testing.T, tree, tree)) func(*testing.T, tree, tree) {
	return func(t *testing.T, pool, cfg tree) {
		for _, e := range edits {
			if e != nil {
				e(t, pool, cfg)
			}
		}
	}
}

var doctorCases = []doctorCase{
	{check: "ext_proc.failure_mode_allow", envoy: func(t *testing.T, y tree) { envoytree.FilterConfig(t, y, extProcFilter)["failure_mode_allow"] = false }},
	{check: "ext_proc.allow_mode_override", envoy: func(t *testing.T, y tree) { delete(envoytree.FilterConfig(t, y, extProcFilter), "allow_mode_override") }},
	{check: "ext_proc.message_timeout", envoy: func(t *testing.T, y tree) { envoytree.FilterConfig(t, y, extProcFilter)["message_timeout"] = "5s" }},
	{check: "ext_proc.request_attributes", mode: "opaque",
		envoy: func(t *testing.T, y tree) {
			envoytree.FilterConfig(t, y, extProcFilter)["request_attributes"] = []any{"source.address"}
		},
		config: func(t *testing.T, pool, _ tree) { pool["name"] = "app" }},
	{check: "ext_proc.receiving_namespaces", envoy: func(t *testing.T, y tree) {
		delete(envoytree.Dig(t, envoytree.FilterConfig(t, y, extProcFilter), "metadata_options"), "receiving_namespaces")
	}},
	{check: "ext_proc.forwarding_namespaces", envoy: func(t *testing.T, y tree) {
		delete(envoytree.Dig(t, envoytree.FilterConfig(t, y, extProcFilter), "metadata_options"), "forwarding_namespaces")
	}},
	{check: "ext_proc.grpc_service", envoy: func(t *testing.T, y tree) {
		// Envoy refuses a gRPC health check over HTTP/1.1; not the calls.
		delete(envoytree.ClusterNamed(t, y, "envoy_affinity"), "typed_extension_protocol_options")
		delete(envoytree.ClusterNamed(t, y, "envoy_affinity"), "health_checks")
	}},
	{check: "ext_proc.grpc_service", live: true, envoy: func(t *testing.T, y tree) {
		// The service listens on 127.0.0.1 only.
		envoytree.Dig(t, envoytree.ClusterNamed(t, y, "envoy_affinity"), "load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint", "address", "socket_address")["address"] = "127.0.0.2"
	}},
	{check: "ext_proc.processing_mode", envoy: func(t *testing.T, y tree) {
		delete(envoytree.Dig(t, envoytree.RouteNamed(t, y, "decide"), "typed_per_filter_config"), extProcFilter)
	}},
	{check: "ext_proc.missing", envoy: func(t *testing.T, y tree) { envoytree.RemoveExtProcs(t, y) }},
	{check: "override_host.policy", envoy: func(t *testing.T, y tree) { delete(envoytree.ClusterNamed(t, y, "app"), "load_balancing_policy") }},
	{check: "override_host.sources", envoy: func(t *testing.T, y tree) {
		oh := envoytree.OverrideHost(t, y, "app")
		oh["override_host_sources"] = oh["override_host_sources"].([]any)[1:]
	}},
	{check: "override_host.selected_host_key", envoy: func(t *testing.T, y tree) { delete(envoytree.OverrideHost(t, y, "app"), "selected_host_key") }},
	{check: "override_host.fallback_policy", envoy: func(t *testing.T, y tree) {
		envoytree.Dig(t, envoytree.OverrideHost(t, y, "app"), "fallback_policy", "policies", 0, "typed_extension_config", "typed_config",
			"consistent_hashing_lb_config", "hash_policy", 0, "cookie")["name"] = "other"
	}},
	{check: "route.retry_policy", envoy: func(t *testing.T, y tree) {
		for _, r := range envoytree.Routes(t, y) {
			delete(envoytree.Dig(t, r, "route"), "retry_policy")
		}
	}},
	{check: "cluster.max_retries", envoy: func(t *testing.T, y tree) { delete(envoytree.ClusterNamed(t, y, "app"), "circuit_breakers") }},
	{check: "jwt_authn.provider", envoy: func(t *testing.T, y tree) { envoytree.Provider(t, y, "affinity")["from_cookies"] = []any{"other"} }},
	{check: "jwt_authn.payload_in_metadata", envoy: func(t *testing.T, y tree) { delete(envoytree.Provider(t, y, "affinity"), "payload_in_metadata") }},
	{check: "jwt_authn.clear_route_cache", envoy: func(t *testing.T, y tree) { envoytree.Provider(t, y, "affinity")["clear_route_cache"] = false }},
	{check: "jwt_authn.jwt_cache_config", envoy: func(t *testing.T, y tree) { delete(envoytree.Provider(t, y, "affinity"), "jwt_cache_config") }},
	{check: "jwt_authn.clock_skew_seconds", envoy: func(t *testing.T, y tree) { delete(envoytree.Provider(t, y, "affinity"), "clock_skew_seconds") }},
	{check: "jwt_authn.audiences", envoy: func(t *testing.T, y tree) { envoytree.Provider(t, y, "affinity")["audiences"] = []any{"other"} }},
	{check: "jwt_authn.max_lifetime", envoy: func(t *testing.T, y tree) { envoytree.Provider(t, y, "affinity")["max_lifetime"] = "60s" }},
	{check: "jwt_authn.provider", base: envelopePool, envoy: func(t *testing.T, y tree) {
		envoytree.Provider(t, y, "affinity")["from_headers"] = []any{tree{"name": "x-other"}}
	}},
	{check: "jwt_authn.max_lifetime", base: envelopePool, envoy: func(t *testing.T, y tree) { envoytree.Provider(t, y, "affinity")["max_lifetime"] = "302s" }},
	{check: "envelope.restore", base: envelopePool, envoy: func(t *testing.T, y tree) {
		delete(envoytree.RouteNamed(t, y, "established"), "request_headers_to_add")
	}},
	{check: "envelope.response", base: envelopePool, envoy: func(t *testing.T, y tree) {
		delete(envoytree.RouteNamed(t, y, "established"), "response_headers_to_remove")
	}},
	{check: "jwt_authn.jwks", envoy: func(t *testing.T, y tree) {
		envoytree.Dig(t, envoytree.Provider(t, y, "affinity"), "remote_jwks", "http_uri")["uri"] = "http://127.0.0.1:9003/keys.json"
	}},
	{check: "jwt_authn.jwks", live: true, config: func(t *testing.T, _, cfg tree) {
		keys := filepath.Join(t.TempDir(), "keys.txt")
		if err := os.WriteFile(keys, []byte(launch.NewKeyLine("k2", "ed25519")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg["keys"] = tree{"file": keys}
	}},
	{check: "jwt_authn.rules", envoy: func(t *testing.T, y tree) {
		envoytree.Dig(t, envoytree.FilterConfig(t, y, "envoy.filters.http.jwt_authn"), "rules", 0)["requires"] = tree{"provider_name": "affinity"}
	}},
	{check: "route.established", envoy: func(t *testing.T, y tree) {
		vh := envoytree.Dig(t, envoytree.ConnectionManager(t, y), "route_config", "virtual_hosts", 0)
		vh["routes"] = []any{envoytree.RouteNamed(t, y, "decide")}
	}},
	{check: "route.order", envoy: func(t *testing.T, y tree) {
		vh := envoytree.Dig(t, envoytree.ConnectionManager(t, y), "route_config", "virtual_hosts", 0)
		vh["routes"] = []any{envoytree.RouteNamed(t, y, "decide"), envoytree.RouteNamed(t, y, "established")}
	}},
	{check: "failover.response", envoy: func(t *testing.T, y tree) { delete(envoytree.FilterConfig(t, y, extProcFilter), "response_attributes") }},
	{check: "failover.mark", envoy: func(t *testing.T, y tree) { delete(envoytree.Provider(t, y, "affinity"), "claim_to_headers") }},
	{check: "failover.mark", mode: "opaque", envoy: func(t *testing.T, y tree) {
		for _, r := range envoytree.Routes(t, y) {
			delete(r.(tree), "response_headers_to_add")
		}
	}},
	{check: "hcm.early_header_removal", envoy: func(t *testing.T, y tree) {
		delete(envoytree.ConnectionManager(t, y), "early_header_mutation_extensions")
	}},
	{check: "filter.order", envoy: func(t *testing.T, y tree) {
		h := envoytree.ConnectionManager(t, y)
		f := h["http_filters"].([]any)
		f[0], f[1] = f[1], f[0] // the ext_proc before jwt_authn
	}},
	{check: "stateful_session.cookie", mode: "native", envoy: func(t *testing.T, y tree) {
		envoytree.Dig(t, envoytree.FilterConfig(t, y, "envoy.filters.http.stateful_session"), "session_state", "typed_config", "cookie")["name"] = "other"
	}},
	{check: "stateful_session.missing", mode: "native", envoy: func(t *testing.T, y tree) { envoytree.RemoveFilter(t, y, "envoy.filters.http.stateful_session") }},
	{check: "hosts.missing", config: func(t *testing.T, pool, _ tree) {
		pool["hosts"] = append(pool["hosts"].([]any), tree{"name": "gone", "address": "127.0.0.1:1"})
	}},
	{check: "hosts.extra", config: func(t *testing.T, pool, _ tree) { pool["hosts"] = pool["hosts"].([]any)[:2] }},
	{check: "hosts.name", config: func(t *testing.T, pool, _ tree) { envoytree.Dig(t, pool, "hosts", 0)["name"] = "web-1" }},
	{check: "discovery.cluster", config: func(t *testing.T, pool, _ tree) {
		delete(pool, "hosts")
		pool["discovery"] = tree{"envoy": tree{"admin": "127.0.0.1:9901", "cluster": "web"}}
	}},
	{check: "cluster.missing", config: func(t *testing.T, pool, _ tree) { pool["name"] = "shop" }},
	// A cluster Envoy has, but no route sends requests to.
	{check: "route.missing", config: func(t *testing.T, pool, _ tree) { pool["name"] = "envoy_affinity_admin" }},
}

// runDoctor runs the doctor command and returns its report and whether it
// exited non-zero.
func runDoctor(t *testing.T, args ...string) (*doctor.Report, bool) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bins.Server, append([]string{"doctor", "-json"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	var r doctor.Report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("doctor %v: %v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
	}
	return &r, err != nil
}

// doctorConfig writes the stack's configuration in the given mode, edited.
func doctorConfig(t *testing.T, s *launch.Stack, mode string, edit func(*testing.T, tree, tree)) string {
	t.Helper()
	data, err := os.ReadFile(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg tree
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	pool := envoytree.Dig(t, cfg, "pools", 0)
	pool["mode"] = mode
	if edit != nil {
		edit(t, pool, cfg)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(s.Dir(), "doctor-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(out); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// shippedYAML reads envoy/<mode>.yaml as a tree.
func shippedYAML(t *testing.T, mode string) tree {
	t.Helper()
	data, err := os.ReadFile(envoyYAML(mode + ".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var y tree
	if err := yaml.Unmarshal(data, &y); err != nil {
		t.Fatal(err)
	}
	return y
}

// mergedYAML is plainEnvoyYAML with the pieces envoy-config prints for the
// stack's configuration in the given mode merged in, as a tree.
func mergedYAML(t *testing.T, s *launch.Stack, mode string, base func(*testing.T, tree, tree)) tree {
	t.Helper()
	cmd := exec.Command(bins.Server, "envoy-config", "-config", doctorConfig(t, s, mode, base), "-cluster", "app")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	pieces, err := cmd.Output()
	if err != nil {
		t.Fatalf("envoy-config: %v: %s", err, stderr.String())
	}
	merged, err := mergePieces([]byte(plainEnvoyYAML), pieces)
	if err != nil {
		t.Fatal(err)
	}
	var y tree
	if err := yaml.Unmarshal(merged, &y); err != nil {
		t.Fatal(err)
	}
	return y
}

// TestDoctor runs the doctor against real Envoys: the YAMLs of envoy/, and
// a plain Envoy with envoy-config's pieces merged in, give no problem in
// their mode; each problem put back into the merged one is reported, from
// the live Envoy's config dump and (unless only a running Envoy shows it)
// from the file.
func TestDoctor(t *testing.T) {
	s := newStack(t, "verified")
	ctx := context.Background()
	run := func(t *testing.T, y tree, config string) (live, file *doctor.Report, liveFailed bool) {
		t.Helper()
		data, err := yaml.Marshal(y)
		if err != nil {
			t.Fatal(err)
		}
		g, err := s.AddEnvoyWith(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Proc.Stop()
		live, liveFailed = runDoctor(t, "-config", config, "-envoy-admin", "127.0.0.1:"+strconv.Itoa(g.AdminPort))
		file, _ = runDoctor(t, "-config", config, "-envoy-yaml", g.Config)
		return live, file, liveFailed
	}
	for _, mode := range []string{"verified", "opaque", "native"} {
		t.Run("clean/"+mode, func(t *testing.T) {
			for name, y := range map[string]tree{"envoy/" + mode + ".yaml": shippedYAML(t, mode), "merged": mergedYAML(t, s, mode, nil)} {
				live, file, failed := run(t, y, doctorConfig(t, s, mode, nil))
				if failed || len(live.Problems) > 0 || len(file.Problems) > 0 {
					t.Errorf("%s: live: %v; file: %v", name, live.Problems, file.Problems)
				}
			}
		})
	}
	for _, c := range []struct {
		name, mode string
		base       func(*testing.T, tree, tree)
	}{
		{"verified-envelope", "verified", envelopePool},
		// Opaque mode's pieces in both modes: nothing to verify.
		{"verified-header", "verified", headerPool},
		{"opaque-header", "opaque", headerPool},
	} {
		t.Run("clean/"+c.name, func(t *testing.T) {
			live, file, failed := run(t, mergedYAML(t, s, c.mode, c.base), doctorConfig(t, s, c.mode, c.base))
			if failed || len(live.Problems) > 0 || len(file.Problems) > 0 {
				t.Errorf("live: %v; file: %v", live.Problems, file.Problems)
			}
		})
	}
	for i, c := range doctorCases {
		mode := c.mode
		if mode == "" {
			mode = "verified"
		}
		t.Run(fmt.Sprintf("%02d-%s/%s", i, c.check, mode), func(t *testing.T) {
			y := mergedYAML(t, s, mode, c.base)
			if c.envoy != nil {
				c.envoy(t, y)
			}
			live, file, failed := run(t, y, doctorConfig(t, s, mode, both(c.base, c.config)))
			if !live.Has(c.check) {
				t.Errorf("live Envoy: no %s in %v", c.check, live.Problems)
			}
			if !c.live && !file.Has(c.check) {
				t.Errorf("file: no %s in %v", c.check, file.Problems)
			}
			wantFail := slices.ContainsFunc(live.Problems, func(p doctor.Problem) bool { return p.Severity == doctor.Error })
			if failed != wantFail {
				t.Errorf("exit status non-zero %v, with errors %v", failed, wantFail)
			}
		})
	}
}

// serverMetric reads one sample of the service's /metrics, as written
// (name with its labels).
func serverMetric(s *launch.Stack, sample string) (float64, error) {
	resp, err := s.AdminClient().Get(s.ServerURL("/metrics"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", sample)
}

// TestDoctorInService: a service that reads its hosts from Envoy checks
// that Envoy's configuration on its own, says so in a metric, and answers
// /debug/doctor; when the Envoy it reads is configured wrongly, the metric
// and the endpoint say what.
func TestDoctorInService(t *testing.T) {
	s := newStackWith(t, launch.Options{EnvoySource: true, ServerArgs: []string{"-doctor-interval", "100ms"}})
	ctx := context.Background()
	const errors = `envoy_affinity_envoy_config_problems{severity="error"}`
	waitMetric := func(want float64) {
		t.Helper()
		if err := launch.Eventually(ctx, 10*time.Second, func() error {
			got, err := serverMetric(s, errors)
			if err == nil && got != want {
				err = fmt.Errorf("%s = %v, want %v", errors, got, want)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	debugDoctor := func() *doctor.Report {
		t.Helper()
		resp, err := s.AdminClient().Get(s.ServerURL("/debug/doctor"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r doctor.Report
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("/debug/doctor: %s, %v", resp.Status, err)
		}
		return &r
	}
	waitMetric(0)
	if r := debugDoctor(); len(r.Problems) > 0 {
		t.Fatalf("envoy/verified.yaml: %v", r.Problems)
	}

	// The service now reads an Envoy whose cluster keeps Envoy's default
	// limit of 3 concurrent retries.
	y := shippedYAML(t, "verified")
	delete(envoytree.ClusterNamed(t, y, "app"), "circuit_breakers")
	data, err := yaml.Marshal(y)
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.AddEnvoyWith(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DiscoverFrom(g.AdminPort); err != nil {
		t.Fatal(err)
	}
	if err := s.Server.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitMetric(1)
	if r := debugDoctor(); !r.Has("cluster.max_retries") || r.Count(doctor.Error) != 1 {
		t.Fatalf("/debug/doctor: %v", r.Problems)
	}
}
