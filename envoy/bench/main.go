// Command bench measures what each enforcement mode costs Envoy, beside plain
// Envoy round robin, on this machine: the same backends, client and Envoy
// (one worker), configurations interleaved over several rounds. For each it
// reports the saturation throughput at 32 connections, Envoy's CPU time per
// request, and the latency at one connection, for 1,000 established sessions
// chosen at random per request. It prints a Markdown table and, with -out,
// puts it into a file between markers. The load generator is wrk.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/envoy/harness"
)

// config is one measured configuration. The first is the baseline, the
// second Envoy's own cookie stickiness (the other ratio's reference).
type config struct {
	name, mode, yaml string
	// fresh sends no cookie: every request is a new session (the service
	// answers both the request and the response phase).
	fresh bool
}

// sample is one configuration's figures in one round.
type sample struct {
	rps        float64
	cpuPerReq  time.Duration
	p50, p99   time.Duration
	extprocPer float64 // ext_proc streams per request during the load
}

func main() {
	rounds := flag.Int("rounds", 3, "interleaved rounds")
	duration := flag.Duration("duration", 10*time.Second, "length of each wrk run")
	sessions := flag.Int("sessions", 1000, "established sessions the load spreads over")
	out := flag.String("out", "", "also put the table into this file, between its bench markers")
	flag.Parse()
	if err := run(*rounds, *duration, *sessions, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(rounds int, duration time.Duration, sessions int, out string) error {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("wrk is needed (apt-get install wrk): %w", err)
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "envoy-affinity-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bins, err := harness.Build(dir)
	if err != nil {
		return err
	}
	configs := []config{
		{name: "baseline (Envoy round robin)", mode: "opaque", yaml: filepath.Join(root, "envoy", "bench", "baseline.yaml")},
		{name: "envoy-cookie (Envoy's stateful_session)", mode: "opaque", yaml: filepath.Join(root, "envoy", "bench", "envoy-cookie.yaml")},
		{name: "envoy-hash (Envoy's Maglev on a cookie)", mode: "opaque", yaml: filepath.Join(root, "envoy", "bench", "envoy-hash.yaml")},
		{name: "opaque", mode: "opaque"},
		{name: "verified", mode: "verified"},
		{name: "native", mode: "native"},
		{name: "opaque, every request a new session", mode: "opaque", fresh: true},
	}
	results := make([][]sample, len(configs))
	for r := 1; r <= rounds; r++ {
		for i, c := range configs {
			s, err := measure(wrk, root, bins, c, filepath.Join(dir, fmt.Sprintf("r%d-%d", r, i)), duration, sessions)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			fmt.Fprintf(os.Stderr, "round %d %-30s %8.0f req/s  cpu %6.1f µs/req  p50 %v  p99 %v\n",
				r, c.name, s.rps, us(s.cpuPerReq), s.p50, s.p99)
			results[i] = append(results[i], s)
		}
	}
	report := render(configs, results, rounds, duration, sessions, bins.Envoy)
	fmt.Print(report)
	if out != "" {
		return splice(out, report)
	}
	return nil
}

// Markers around the generated table in the report file; the text around
// them is written by hand and kept.
const (
	beginMark = "<!-- bench:begin -->"
	endMark   = "<!-- bench:end -->"
)

// splice puts report between the markers of the file at path.
func splice(path, report string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	text := string(data)
	a, b := strings.Index(text, beginMark), strings.Index(text, endMark)
	if a < 0 || b < a {
		return fmt.Errorf("%s has no %s … %s markers", path, beginMark, endMark)
	}
	text = text[:a+len(beginMark)] + "\n" + report + text[b:]
	return os.WriteFile(path, []byte(text), 0o644)
}

func measure(wrk, root string, bins harness.Binaries, c config, dir string, d time.Duration, sessions int) (sample, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return sample{}, err
	}
	ctx := context.Background()
	st, err := harness.StartStack(ctx, bins, harness.Options{Dir: dir, Mode: c.mode, EnvoyYAML: c.yaml})
	if err != nil {
		return sample{}, err
	}
	defer st.Close()
	// Establish the sessions and keep their cookies.
	cookies := filepath.Join(dir, "cookies.txt")
	f, err := os.Create(cookies)
	if err != nil {
		return sample{}, err
	}
	w := bufio.NewWriter(f)
	for range sessions {
		if c.fresh {
			break
		}
		cl := harness.NewClient(st.URL(""))
		if _, _, err := cl.Get("/"); err != nil {
			f.Close()
			return sample{}, err
		}
		if v := cl.Cookie("affinity"); v != "" {
			fmt.Fprintf(w, "affinity=%s\n", v)
		}
	}
	w.Flush()
	f.Close()

	script := filepath.Join(root, "envoy", "bench", "sessions.lua")
	streams0, _ := st.EnvoyStat("http.ingress.ext_proc.streams_started")
	cpu0, err := cpuTime(st.Envoy.Pid())
	if err != nil {
		return sample{}, err
	}
	tp, err := exec.Command(wrk, "-t1", "-c32", "-d"+d.String(), "-s", script, st.URL("/"), "--", cookies).Output()
	if err != nil {
		return sample{}, fmt.Errorf("wrk: %w", err)
	}
	cpu1, _ := cpuTime(st.Envoy.Pid())
	streams1, _ := st.EnvoyStat("http.ingress.ext_proc.streams_started")
	lat, err := exec.Command(wrk, "-t1", "-c1", "-d"+d.String(), "--latency", "-s", script, st.URL("/"), "--", cookies).Output()
	if err != nil {
		return sample{}, fmt.Errorf("wrk: %w", err)
	}
	var s sample
	var reqs float64
	for _, line := range strings.Split(string(tp), "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) >= 2 && fields[0] == "Requests/sec:":
			s.rps, _ = strconv.ParseFloat(fields[1], 64)
		case len(fields) >= 3 && fields[1] == "requests" && fields[2] == "in":
			reqs, _ = strconv.ParseFloat(fields[0], 64)
		case strings.Contains(line, "Non-2xx") || strings.Contains(line, "Socket errors"):
			return sample{}, fmt.Errorf("wrk saw errors: %s", line)
		}
	}
	if reqs == 0 {
		return sample{}, fmt.Errorf("wrk output without a request count:\n%s", tp)
	}
	s.cpuPerReq = time.Duration(float64(cpu1-cpu0) / reqs)
	s.extprocPer = float64(streams1-streams0) / reqs
	for _, line := range strings.Split(string(lat), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 2 && fields[0] == "50%" {
			s.p50 = parseDur(fields[1])
		}
		if len(fields) == 2 && fields[0] == "99%" {
			s.p99 = parseDur(fields[1])
		}
	}
	return s, nil
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

// parseDur reads wrk's "123.45us", "1.20ms", "2.00s".
func parseDur(s string) time.Duration {
	s = strings.Replace(s, "us", "µs", 1)
	d, _ := time.ParseDuration(s)
	return d
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

func render(configs []config, results [][]sample, rounds int, d time.Duration, sessions int, envoy string) string {
	var b strings.Builder
	base := results[0]
	baseRPS := median(pick(base, func(s sample) float64 { return s.rps }))
	baseP50 := median(pick(base, func(s sample) time.Duration { return s.p50 }))
	baseP99 := median(pick(base, func(s sample) time.Duration { return s.p99 }))
	cookieRPS := median(pick(results[1], func(s sample) float64 { return s.rps }))
	fmt.Fprintf(&b, "| configuration | req/s at c=32 (min–max) | ÷ baseline | ÷ envoy-cookie | Envoy CPU µs/req | ext_proc streams/req | p50 at c=1 | added p50 | p99 at c=1 | added p99 |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|\n")
	for i, c := range configs {
		rs := results[i]
		rps := pick(rs, func(s sample) float64 { return s.rps })
		lo, hi := spread(rps)
		p50 := median(pick(rs, func(s sample) time.Duration { return s.p50 }))
		p99 := median(pick(rs, func(s sample) time.Duration { return s.p99 }))
		fmt.Fprintf(&b, "| %s | %.0f (%.0f–%.0f) | %.2f× | %.2f× | %.1f | %.3f | %d µs | %+d µs | %d µs | %+d µs |\n",
			c.name, median(rps), lo, hi, median(rps)/baseRPS, median(rps)/cookieRPS,
			us(median(pick(rs, func(s sample) time.Duration { return s.cpuPerReq }))),
			median(pick(rs, func(s sample) float64 { return s.extprocPer })),
			p50.Microseconds(), (p50 - baseP50).Microseconds(), p99.Microseconds(), (p99 - baseP99).Microseconds())
	}
	envoyVersion, _ := exec.Command(envoy, "--version").Output()
	fmt.Fprintf(&b, "\nMedians of %d interleaved rounds, wrk %v per run, %d established sessions, Envoy with one worker; %d cores (%s), %s, Envoy %s.\n",
		rounds, d, sessions, runtime.NumCPU(), cpuModel(), runtime.Version(), envoyRelease(string(envoyVersion)))
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
	return harness.EnvoyVersion
}
