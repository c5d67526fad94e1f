// Command bench measures what each enforcement mode costs Envoy, beside plain
// Envoy round robin, on this machine: the same backends, client and Envoy
// (one worker), configurations interleaved over several rounds. For each it
// reports the saturation throughput at 32 connections, Envoy's CPU time per
// request, and the latency at one connection, for 1,000 established sessions
// chosen at random per request. It prints a Markdown table and, with -out,
// puts it into a file between markers. The load generator is wrk.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/envoyversion"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// config is one measured configuration. The first is the baseline, the
// second Envoy's own cookie stickiness (the other ratio's reference).
type config struct {
	name, mode, yaml string
	// fresh sends no cookie: every request is a new session (the service
	// answers both the request and the response phase).
	fresh bool
	// establish, when set, is the Envoy YAML the sessions are opened
	// through (by another Envoy on the same service), for a configuration
	// that issues no cookie itself.
	establish string
	// serverArgs are extra flags of the service.
	serverArgs []string
	// sessionHeader, when set, is the response header whose value the
	// sessions carry back (an upstream_header pool), instead of the cookie;
	// backendArgs and keySources set such a backend and pool up.
	sessionHeader string
	backendArgs   []string
	keySources    []launch.KeySource
	// load is the pool's load block (none when nil).
	load *launch.Load
}

// sample is one configuration's figures in one round.
type sample struct {
	rps        float64
	cpuPerReq  time.Duration
	p50, p99   time.Duration // open loop at -rate, from when each request was due
	p90, p999  time.Duration
	extprocPer float64 // ext_proc streams per request during the load
	adminPerS  float64 // requests to Envoy's admin API per second during the load
}

// settings of one benchmark run.
type settings struct {
	rounds   int
	duration time.Duration
	sessions int
	rate     float64 // open-loop requests per second for the latency figures
	out      string
	wrk      string // wrk's path for the throughput runs; "" uses affinity-load
	load     string // affinity-load's path
	quick    bool
	// grpcClients compares Envoy's envoy_grpc and google_grpc clients.
	grpcClients bool
	// yamlRev, when set, compares verified.yaml and opaque.yaml with their
	// versions at this git revision.
	yamlRev string
	// parts measures verified mode with its parts taken away one by one.
	parts bool
	// luaFloor measures what a Lua filter costs before it verifies anything.
	luaFloor bool
	// envelope measures verified mode with an enveloped session header.
	envelope bool
	// authz compares the ext_proc call with an ext_authz call.
	authz bool
	// service measures the service alone, without Envoy.
	service bool
	// oneRoute compares verified.yaml with a variant that does not choose
	// the route again.
	oneRoute bool
	// callVariants compares opaque.yaml's ext_proc call with one that
	// sends the service fewer headers and attributes.
	callVariants bool
	// jwtCache compares jwt_authn's token cache at its size in
	// verified.yaml and at the number of sessions.
	jwtCache bool
	// loadBlock compares verified and native modes with and without the
	// pool's load block, which reads Envoy's admin API.
	loadBlock bool
}

func main() {
	var st settings
	flag.IntVar(&st.rounds, "rounds", 3, "interleaved rounds")
	flag.DurationVar(&st.duration, "duration", 10*time.Second, "length of each load run")
	flag.IntVar(&st.sessions, "sessions", 1000, "established sessions the load spreads over")
	flag.Float64Var(&st.rate, "rate", 1000, "open-loop rate (requests per second) of the latency runs")
	flag.StringVar(&st.out, "out", "", "also put the table into this file, between its bench markers")
	flag.BoolVar(&st.grpcClients, "grpc-clients", false, "compare Envoy's envoy_grpc (opaque.yaml) and google_grpc clients for the ext_proc call, beside the baseline")
	flag.StringVar(&st.yamlRev, "yaml-rev", "", "compare envoy/verified.yaml and envoy/opaque.yaml with their versions at this git revision, beside the baseline")
	flag.BoolVar(&st.parts, "verified-parts", false, "measure verified mode whole and with its parts taken away one at a time (override_host, the failover marker, the ext_proc filter, the route re-selection, claim_to_headers, the payload in metadata), beside the baseline and Envoy's cookie")
	flag.BoolVar(&st.authz, "authz", false, "compare opaque mode's ext_proc call with an ext_authz call (e2e/bench/opaque-authz.yaml), for established and new sessions, beside the baseline and Envoy's cookie")
	flag.BoolVar(&st.service, "service", false, "measure the service alone: opaque mode's ext_proc streams from affinity-load -extproc, the service pinned to one CPU and the client to the other, at 1 and 64 streams")
	flag.BoolVar(&st.jwtCache, "jwt-cache", false, "verified mode with jwt_authn's token cache as verified.yaml sizes it and sized to -sessions, beside the baseline and Envoy's cookie")
	flag.BoolVar(&st.oneRoute, "verified-one-route", false, "compare verified.yaml with a variant that skips the ext_proc by matchers alone, on one route, without clear_route_cache")
	flag.BoolVar(&st.callVariants, "call-variants", false, "compare opaque.yaml's ext_proc call with one that forwards only the cookie header (forward_rules) and only the cluster attribute, for established and new sessions")
	flag.BoolVar(&st.envelope, "envelope", false, "verified mode with the session in an application header the backend starts, in a signed envelope that Envoy verifies and unwraps (launch.SessionHeaderChanges), beside verified mode's cookie, the baseline and Envoy's cookie")
	flag.BoolVar(&st.loadBlock, "load", false, "verified and native modes with the pool's load block reading Envoy's admin API every 1s (the default) and every 100ms, beside the same modes without it, the baseline and Envoy's cookie; then the Envoy CPU one /clusters?format=json read costs; with -out, into the bench-load markers")
	flag.BoolVar(&st.luaFloor, "lua-floor", false, "compare plain Envoy with a Lua filter that only reads the session cookie (the least any scripted verifier costs) and with jwt_authn alone, beside Envoy's cookie")
	flag.BoolVar(&st.quick, "quick", false, "a few seconds: one short round of four configurations, Go client only (make test runs it so the benchmark cannot rot)")
	flag.Parse()
	if st.quick {
		st.rounds, st.duration, st.sessions, st.rate = 1, time.Second, 50, 200
	} else if p, err := exec.LookPath("wrk"); err == nil {
		st.wrk = p
	}
	if err := run(st); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(st settings) error {
	rounds, out := st.rounds, st.out
	root, err := launch.ModuleRoot()
	if err != nil {
		return err
	}
	dir, bins, remove, err := launch.BuildTemp("bench")
	if err != nil {
		return err
	}
	defer remove()
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/affinity-load")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build affinity-load: %v\n%s", err, out)
	}
	st.load = filepath.Join(dir, "affinity-load")
	if st.service {
		return serviceAlone(st, bins, dir)
	}
	configs := []config{
		{name: "baseline (Envoy round robin)", mode: "opaque", yaml: filepath.Join(root, "e2e", "bench", "baseline.yaml")},
		{name: "envoy-cookie (Envoy's stateful_session)", mode: "opaque", yaml: filepath.Join(root, "e2e", "bench", "envoy-cookie.yaml")},
		{name: "envoy-hash (Envoy's Maglev on a cookie)", mode: "opaque", yaml: filepath.Join(root, "e2e", "bench", "envoy-hash.yaml")},
		{name: "opaque", mode: "opaque"},
		{name: "verified", mode: "verified"},
		{name: "native", mode: "native"},
		{name: "opaque, every request a new session", mode: "opaque", fresh: true},
	}
	// all is the full list the variants below pick from, also with -quick.
	all := configs
	if st.quick {
		configs = []config{configs[0], configs[3], configs[4], configs[5]}
	}
	if st.grpcClients {
		// Envoy's two gRPC clients for the ext_proc call, side by side.
		variant, err := googleGRPCVariant(root, dir)
		if err != nil {
			return err
		}
		configs = []config{all[0], all[3], {name: "opaque, google_grpc client", mode: "opaque", yaml: variant}}
	}
	if st.yamlRev != "" {
		configs = []config{all[0]}
		for _, mode := range []string{"verified", "opaque"} {
			old, err := yamlAt(root, dir, st.yamlRev, mode)
			if err != nil {
				return err
			}
			configs = append(configs, config{name: mode, mode: mode}, config{name: mode + ", YAML of " + st.yamlRev, mode: mode, yaml: old})
		}
	}
	if st.authz {
		authz := filepath.Join(root, "e2e", "bench", "opaque-authz.yaml")
		configs = []config{all[0], all[1], all[3],
			{name: "opaque, ext_authz call", mode: "opaque", yaml: authz, serverArgs: []string{"-ext-authz"}},
			all[6],
			{name: "opaque, ext_authz call, every request a new session", mode: "opaque", yaml: authz, fresh: true, serverArgs: []string{"-ext-authz"}}}
	}
	if st.jwtCache {
		big := filepath.Join(dir, "verified-cache.yaml")
		if err := launch.WriteVariant(filepath.Join(root, "envoy", "verified.yaml"), big,
			"jwt_cache_config: {jwt_cache_size: 10000}", fmt.Sprintf("jwt_cache_config: {jwt_cache_size: %d}", st.sessions)); err != nil {
			return err
		}
		configs = []config{all[0], all[1], all[4],
			{name: fmt.Sprintf("verified, jwt_cache_size %d", st.sessions), mode: "verified", yaml: big}}
	}
	if st.callVariants {
		lean := filepath.Join(dir, "opaque-lean.yaml")
		if err := launch.WriteVariant(filepath.Join(root, "envoy", "opaque.yaml"), lean,
			"              request_attributes: [xds.cluster_name, source.address]\n",
			"              request_attributes: [xds.cluster_name]\n              forward_rules: {allowed_headers: {patterns: [{exact: cookie}]}}\n"); err != nil {
			return err
		}
		configs = []config{all[0], all[1], all[3],
			{name: "opaque, the cookie header and the cluster only", mode: "opaque", yaml: lean},
			all[6],
			{name: "opaque, the cookie header and the cluster only, every request a new session", mode: "opaque", yaml: lean, fresh: true}}
	}
	if st.oneRoute {
		variant, err := oneRouteVariant(root, dir)
		if err != nil {
			return err
		}
		configs = []config{all[0], all[1], all[4], {name: "verified, one route, matchers only", mode: "verified", yaml: variant}}
	}
	if st.luaFloor {
		lua := filepath.Join(dir, "baseline-lua.yaml")
		if err := launch.WriteVariant(filepath.Join(root, "e2e", "bench", "baseline.yaml"), lua,
			"          http_filters:\n", "          http_filters:\n"+luaCookieReader); err != nil {
			return err
		}
		parts, err := partsConfigs(root, dir)
		if err != nil {
			return err
		}
		configs = []config{all[0], all[1],
			{name: "Lua filter reading the cookie, nothing more", mode: "opaque", yaml: lua},
			parts[len(parts)-1]}
	}
	if st.envelope {
		data, err := os.ReadFile(filepath.Join(root, "envoy", "verified.yaml"))
		if err != nil {
			return err
		}
		text, err := launch.ApplyChanges(string(data), launch.SessionHeaderChanges("x-session-id", "default"))
		if err != nil {
			return err
		}
		variant := filepath.Join(dir, "verified-envelope.yaml")
		if err := os.WriteFile(variant, []byte(text), 0o600); err != nil {
			return err
		}
		configs = []config{all[0], all[1], all[4],
			{name: "verified, envelope in X-Session-Id", mode: "verified", yaml: variant, sessionHeader: "X-Session-Id",
				backendArgs: []string{"-session-header", "X-Session-Id"},
				keySources:  []launch.KeySource{{Type: "upstream_header", Name: "X-Session-Id", Envelope: "signed"}}}}
	}
	if st.loadBlock {
		configs = loadConfigs(all)
	}
	if st.parts {
		parts, err := partsConfigs(root, dir)
		if err != nil {
			return err
		}
		configs = append([]config{all[0], all[1]}, parts...)
	}
	results := make([][]sample, len(configs))
	for r := 1; r <= rounds; r++ {
		for i, c := range configs {
			s, err := measure(st, root, bins, c, filepath.Join(dir, fmt.Sprintf("r%d-%d", r, i)))
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			fmt.Fprintf(os.Stderr, "round %d %-30s %8.0f req/s  cpu %6.1f µs/req  p50 %v  p99 %v  admin %.1f/s\n",
				r, c.name, s.rps, us(s.cpuPerReq), s.p50, s.p99, s.adminPerS)
			results[i] = append(results[i], s)
		}
	}
	report := render(configs, results, st, bins.Envoy)
	marker := "bench"
	if st.loadBlock {
		cost, err := adminReadCost(bins, filepath.Join(dir, "admin-reads"))
		if err != nil {
			return fmt.Errorf("the cost of an admin read: %w", err)
		}
		report += "\n" + cost
		marker = "bench-load"
	}
	fmt.Print(report)
	if out != "" {
		return splice(out, marker, report)
	}
	return nil
}

// luaCookieReader is an HTTP filter, in baseline.yaml's indentation, that
// reads the cookie header and changes nothing: the least a verifier written
// in Lua would cost Envoy per request.
const luaCookieReader = `          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: |
                  function envoy_on_request(handle)
                    local cookie = handle:headers():get("cookie")
                  end
`

// splice puts report between the markers named name (bench, bench-load)
// of the file at path; the text around them is written by hand and kept.
func splice(path, name, report string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	beginMark, endMark := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	text := string(data)
	a, b := strings.Index(text, beginMark), strings.Index(text, endMark)
	if a < 0 || b < a {
		return fmt.Errorf("%s has no %s … %s markers", path, beginMark, endMark)
	}
	text = text[:a+len(beginMark)] + "\n" + report + text[b:]
	return os.WriteFile(path, []byte(text), 0o644)
}

func measure(set settings, root string, bins launch.Binaries, c config, dir string) (sample, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return sample{}, err
	}
	ctx := context.Background()
	st, err := launch.StartStack(ctx, bins, launch.Options{Dir: dir, Mode: c.mode, EnvoyYAML: c.yaml, ServerArgs: c.serverArgs,
		BackendArgs: c.backendArgs, KeySources: c.keySources, Load: c.load})
	if err != nil {
		return sample{}, err
	}
	defer st.Close()
	cookies, err := establish(ctx, st, c, dir, set.sessions)
	if err != nil {
		return sample{}, err
	}
	if set.jwtCache {
		// Each session once through the Envoy measured, so that its token
		// cache holds what it can before the figures count: what a cache
		// of long-lived sessions sees.
		if err := warm(st.URL("/"), cookies); err != nil {
			return sample{}, err
		}
	}
	streams0, _ := st.EnvoyStat("http.ingress.ext_proc.streams_started")
	admin0, _ := st.EnvoyStat(adminRequests)
	start := time.Now()
	cpu0, err := cpuTime(st.Envoy.Pid())
	if err != nil {
		return sample{}, err
	}
	var s sample
	var reqs float64
	if set.wrk != "" {
		s.rps, reqs, err = wrkThroughput(set.wrk, filepath.Join(root, "e2e", "bench", "sessions.lua"), st.URL("/"), cookies, set.duration)
	} else {
		var r loadResult
		r, err = runLoad(set.load, "-url", st.URL("/"), "-cookies", cookies, "-c", "32", "-duration", set.duration.String())
		s.rps, reqs = r.RPS, float64(r.Requests)
		if err == nil && r.Errors > 0 {
			err = fmt.Errorf("%d of %d requests failed", r.Errors, r.Requests)
		}
	}
	if err != nil {
		return sample{}, err
	}
	cpu1, _ := cpuTime(st.Envoy.Pid())
	elapsed := time.Since(start)
	admin1, _ := st.EnvoyStat(adminRequests)
	streams1, _ := st.EnvoyStat("http.ingress.ext_proc.streams_started")
	s.cpuPerReq = time.Duration(float64(cpu1-cpu0) / reqs)
	s.extprocPer = float64(streams1-streams0) / reqs
	// Less the one read that fetched admin1, which counts itself.
	s.adminPerS = float64(admin1-admin0-1) / elapsed.Seconds()
	if err := checkReads(c, s.adminPerS); err != nil {
		return sample{}, err
	}

	lat, err := runLoad(set.load, "-url", st.URL("/"), "-cookies", cookies, "-rate", fmt.Sprint(set.rate), "-duration", set.duration.String())
	if err != nil {
		return sample{}, err
	}
	if lat.Errors > 0 {
		return sample{}, fmt.Errorf("%d of %d open-loop requests failed", lat.Errors, lat.Requests)
	}
	s.p50 = time.Duration(lat.P50Micros) * time.Microsecond
	s.p90 = time.Duration(lat.P90Micros) * time.Microsecond
	s.p99 = time.Duration(lat.P99Micros) * time.Microsecond
	s.p999 = time.Duration(lat.P999Micros) * time.Microsecond
	return s, nil
}

// establish opens n sessions (none for a fresh configuration), through
// the stack's Envoy or the one c.establish names, and writes their
// cookies to a file, one per line, whose path it returns.
func establish(ctx context.Context, st *launch.Stack, c config, dir string, n int) (string, error) {
	url := st.URL("")
	if c.establish != "" {
		yaml, err := os.ReadFile(c.establish)
		if err != nil {
			return "", err
		}
		g, err := st.AddEnvoyWith(ctx, yaml)
		if err != nil {
			return "", err
		}
		defer g.Proc.Stop() // not beside the Envoy measured
		url = g.URL("")
	}
	cookies := filepath.Join(dir, "cookies.txt")
	if c.fresh {
		return cookies, os.WriteFile(cookies, nil, 0o600)
	}
	// A new session per request (no cookie), whose cookie (or session
	// header) the answer sets.
	header := c.sessionHeader
	lines := make([]string, n)
	err := requests(n, func(c *http.Client, i int) error {
		resp, err := c.Get(url + "/")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		for _, ck := range resp.Cookies() {
			if ck.Name == "affinity" && header == "" {
				lines[i] = "affinity=" + ck.Value
			}
		}
		if v := resp.Header.Get(header); header != "" && v != "" {
			lines[i] = header + ": " + v
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	var all []string
	for _, l := range lines {
		if l != "" {
			all = append(all, l)
		}
	}
	return cookies, os.WriteFile(cookies, []byte(strings.Join(all, "\n")+"\n"), 0o600)
}

// warm sends one request with each cookie of the file.
func warm(url, cookies string) error {
	data, err := os.ReadFile(cookies)
	if err != nil {
		return err
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return requests(len(lines), func(c *http.Client, i int) error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if name, value, ok := strings.Cut(lines[i], ": "); ok && !strings.ContainsAny(name, "=; ") {
			req.Header.Set(name, value)
		} else {
			req.Header.Set("Cookie", lines[i])
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	})
}

// requests makes n requests, eight at a time, over kept-alive connections
// (a connection per request would run out of ports at 100,000); it stops
// at the first error.
func requests(n int, do func(c *http.Client, i int) error) error {
	const workers = 8
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := w; i < n; i += workers {
				if err := do(client, i); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// googleGRPCVariant writes opaque.yaml with Envoy's google_grpc client in
// place of envoy_grpc, and returns its path.
func googleGRPCVariant(root, dir string) (string, error) {
	path := filepath.Join(dir, "opaque-google-grpc.yaml")
	return path, launch.WriteVariant(filepath.Join(root, "envoy", "opaque.yaml"), path,
		"envoy_grpc: {cluster_name: envoy_affinity}", `google_grpc: {target_uri: "127.0.0.1:9002", stat_prefix: envoy_affinity}`)
}

// yamlAt writes envoy/<mode>.yaml as it was at git revision rev and
// returns its path.
func yamlAt(root, dir, rev, mode string) (string, error) {
	cmd := exec.Command("git", "show", rev+":envoy/"+mode+".yaml")
	cmd.Dir = root
	data, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git show %s:envoy/%s.yaml: %w", rev, mode, err)
	}
	path := filepath.Join(dir, mode+"-"+rev+".yaml")
	return path, os.WriteFile(path, data, 0o600)
}

// loadResult is affinity-load's output.
type loadResult struct {
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	RPS        float64 `json:"rps"`
	P50Micros  int64   `json:"p50_us"`
	P90Micros  int64   `json:"p90_us"`
	P99Micros  int64   `json:"p99_us"`
	P999Micros int64   `json:"p999_us"`
}

func runLoad(bin string, args ...string) (loadResult, error) {
	var r loadResult
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		return r, fmt.Errorf("affinity-load: %w", err)
	}
	return r, json.Unmarshal(out, &r)
}

// wrkThroughput runs wrk closed-loop at 32 connections.
func wrkThroughput(wrk, script, url, cookies string, d time.Duration) (rps, reqs float64, err error) {
	tp, err := exec.Command(wrk, "-t1", "-c32", "-d"+d.String(), "-s", script, url, "--", cookies).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("wrk: %w", err)
	}
	for _, line := range strings.Split(string(tp), "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) >= 2 && fields[0] == "Requests/sec:":
			rps, _ = strconv.ParseFloat(fields[1], 64)
		case len(fields) >= 3 && fields[1] == "requests" && fields[2] == "in":
			reqs, _ = strconv.ParseFloat(fields[0], 64)
		case strings.Contains(line, "Non-2xx") || strings.Contains(line, "Socket errors"):
			return 0, 0, fmt.Errorf("wrk saw errors: %s", line)
		}
	}
	if reqs == 0 {
		return 0, 0, fmt.Errorf("wrk output without a request count:\n%s", tp)
	}
	return rps, reqs, nil
}

// cpuTime is the process's user+system CPU time, from /proc.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func median[T int64 | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func spread[T int64 | float64 | time.Duration](xs []T) (T, T) {
	return slices.Min(xs), slices.Max(xs)
}

func pick[T any](ss []sample, f func(sample) T) []T {
	out := make([]T, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func render(configs []config, results [][]sample, set settings, envoy string) string {
	var b strings.Builder
	base := results[0]
	baseRPS := median(pick(base, func(s sample) float64 { return s.rps }))
	baseP50 := median(pick(base, func(s sample) time.Duration { return s.p50 }))
	baseP99 := median(pick(base, func(s sample) time.Duration { return s.p99 }))
	cookieRPS := baseRPS
	for i, c := range configs {
		if strings.HasPrefix(c.name, "envoy-cookie") {
			cookieRPS = median(pick(results[i], func(s sample) float64 { return s.rps }))
		}
	}
	// With -load, the admin API's requests per second show the block read.
	adminHead, adminRule := "", ""
	if set.loadBlock {
		adminHead, adminRule = " Envoy admin requests/s |", "---|"
	}
	fmt.Fprintf(&b, "| configuration | req/s at c=32 (min–max) | ÷ baseline | ÷ envoy-cookie | Envoy CPU µs/req (min–max) | ext_proc streams/req |%s p50 at %.0f/s | added p50 | p90 | p99 | added p99 | p99.9 |\n", adminHead, set.rate)
	fmt.Fprintf(&b, "|---|---|---|---|---|---|%s---|---|---|---|---|---|\n", adminRule)
	for i, c := range configs {
		rs := results[i]
		rps := pick(rs, func(s sample) float64 { return s.rps })
		lo, hi := spread(rps)
		p50 := median(pick(rs, func(s sample) time.Duration { return s.p50 }))
		p99 := median(pick(rs, func(s sample) time.Duration { return s.p99 }))
		p999 := median(pick(rs, func(s sample) time.Duration { return s.p999 }))
		p90 := median(pick(rs, func(s sample) time.Duration { return s.p90 }))
		cpu := pick(rs, func(s sample) time.Duration { return s.cpuPerReq })
		cpuLo, cpuHi := spread(cpu)
		admin := ""
		if set.loadBlock {
			admin = fmt.Sprintf(" %.1f |", median(pick(rs, func(s sample) float64 { return s.adminPerS })))
		}
		fmt.Fprintf(&b, "| %s | %.0f (%.0f–%.0f) | %.2f× | %.2f× | %.1f (%.1f–%.1f) | %.3f |%s %d µs | %+d µs | %d µs | %d µs | %+d µs | %d µs |\n",
			c.name, median(rps), lo, hi, median(rps)/baseRPS, median(rps)/cookieRPS,
			us(median(cpu)), us(cpuLo), us(cpuHi),
			median(pick(rs, func(s sample) float64 { return s.extprocPer })), admin,
			p50.Microseconds(), (p50 - baseP50).Microseconds(), p90.Microseconds(), p99.Microseconds(), (p99 - baseP99).Microseconds(), p999.Microseconds())
	}
	client := "affinity-load (Go)"
	if set.wrk != "" {
		client = "wrk"
	}
	envoyVersion, _ := exec.Command(envoy, "--version").Output()
	fmt.Fprintf(&b, "\nMedians of %d interleaved rounds, %v per run, %d established sessions, Envoy with one worker; throughput closed-loop at 32 connections (%s), latency open-loop at %.0f requests/s measured from when each request was due (affinity-load); %d cores (%s), %s, Envoy %s.\n",
		set.rounds, set.duration, set.sessions, client, set.rate, runtime.NumCPU(), cpuModel(), runtime.Version(), envoyRelease(string(envoyVersion)))
	return b.String()
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	data, _ := io.ReadAll(f)
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func envoyRelease(v string) string {
	_, v, _ = strings.Cut(v, "version:")
	for _, f := range strings.Split(v, "/") {
		if strings.Count(f, ".") == 2 {
			return f
		}
	}
	return envoyversion.Tested
}
