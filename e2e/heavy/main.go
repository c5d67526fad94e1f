// Command heavy measures how new sessions are spread when a few sessions
// load their hosts far more than the others ("heavy users"), through the
// real Envoy. Per configuration it starts Envoy, the service and three demo
// backends of limited capacity (-capacity at a time, -work each, the rest
// waiting in line), opens -heavy sessions that each keep -in-flight
// requests going for the whole run, and once they are established lets
// -sessions ordinary sessions arrive evenly over -over, each sending
// -requests requests -gap apart. It reports where the heavy sessions
// landed, where the new sessions were placed, the ordinary requests'
// latency (overall and on the host with the most heavy sessions) and
// whether every session stayed on one host.
//
// Placement by hashing counts a heavy session as one session, so the host
// that drew the heavy sessions gets its fair share of new ones all the
// same; a least-request balancer sees its queue. The configurations put
// this project (verified mode, with and without bounded loads) beside
// Envoy's own stateful_session cookie over LEAST_REQUEST, and beside plain
// round robin and LEAST_REQUEST without affinity.
//
//	go run ./e2e/heavy                     (make bench-heavy: the full scenario, two rounds)
//	go run ./e2e/heavy -quick              (a few seconds per configuration)
//	go run ./e2e/heavy -layout 2,1,1       (draw heavy sessions until two share a host)
//	go run ./e2e/heavy -envoys 2           (heavy sessions through one Envoy, ordinary ones through another)
//	go run ./e2e/heavy -join               (a fourth backend joins a pool of three carrying sessions)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// settings of one run of the scenario.
type settings struct {
	rounds int
	// envoys in front of the pool: with 2, the heavy sessions enter
	// through the first and the ordinary ones through the second.
	envoys int
	// backends, and each one's capacity and service time.
	backends int
	capacity int
	work     time.Duration
	// heavy sessions, each keeping inFlight requests going.
	heavy, inFlight int
	// sessions ordinary sessions arrive evenly over over, each sending
	// requests requests gap apart.
	sessions int
	over     time.Duration
	requests int
	gap      time.Duration
	// join runs the joining-host scenario instead (join.go): established
	// sessions on all backends but the last, each sending a request every
	// gap, then the last joins and the ordinary sessions arrive.
	join        bool
	established int
	// layout, when set, is the heavy sessions' count per host, largest
	// first, that each sticky configuration is drawn until it has.
	layout []int
	out    string
	// only, when set, keeps the configurations whose name contains it.
	only string
	// loadInterval and loadFactor shape the load configuration's block.
	loadInterval time.Duration
	loadFactor   float64
}

// config is one measured configuration.
type config struct {
	name string
	// mode is the service's (which runs in every configuration, used or
	// not); yaml the Envoy YAML ("": envoy/<mode>.yaml).
	mode, yaml string
	loadFactor float64
	// load places new sessions by the requests in flight Envoy counts
	// (a load block reading the stack's own Envoy).
	load *launch.Load
	// sticky: a session stays on one host (a split one is a failure of
	// the configuration, not what it is).
	sticky bool
}

func main() {
	st := settings{backends: 3}
	flag.IntVar(&st.rounds, "rounds", 1, "rounds over every configuration")
	flag.IntVar(&st.envoys, "envoys", 1, "Envoys in front of the pool, 1 or 2: with 2 the heavy sessions enter through one and the ordinary sessions through the other, and a load block reads both")
	flag.IntVar(&st.capacity, "capacity", 2, "requests each backend works on at a time")
	flag.DurationVar(&st.work, "work", 4*time.Millisecond, "each request's service time on a backend")
	flag.IntVar(&st.heavy, "heavy", 4, "heavy sessions")
	flag.IntVar(&st.inFlight, "in-flight", 4, "requests each heavy session keeps going")
	flag.IntVar(&st.sessions, "sessions", 200, "ordinary sessions")
	flag.DurationVar(&st.over, "over", 10*time.Second, "time over which the ordinary sessions arrive, evenly")
	flag.IntVar(&st.requests, "requests", 10, "requests of each ordinary session")
	flag.DurationVar(&st.gap, "gap", 100*time.Millisecond, "time between the starts of an ordinary session's requests")
	flag.BoolVar(&st.join, "join", false, "the joining-host scenario instead: -established sessions on three backends, then a fourth joins while the ordinary sessions arrive (no heavy sessions)")
	flag.IntVar(&st.established, "established", 60, "with -join: sessions on the first three backends before the fourth joins, each sending a request every -gap")
	layout := flag.String("layout", "", "heavy sessions per host, largest first (e.g. 2,1,1): in each sticky configuration, heavy sessions are opened until they land so, those that do not fit dropped (default: where they land by chance)")
	flag.StringVar(&st.out, "out", "", "also put the table into this file, between its heavy markers")
	flag.StringVar(&st.only, "only", "", "run only the configurations whose name contains this (not with -out)")
	flag.DurationVar(&st.loadInterval, "load-interval", 250*time.Millisecond, "how often the load configuration reads Envoy's requests in flight (load.interval)")
	flag.Float64Var(&st.loadFactor, "load-factor", 1.25, "the load configuration's load.factor")
	quick := flag.Bool("quick", false, "a short run: 30 ordinary sessions over 1.5 s, 5 requests each")
	flag.Parse()
	if *quick {
		st.sessions, st.over, st.requests = 30, 1500*time.Millisecond, 5
	}
	if st.join {
		st.backends = 4
	}
	var err error
	if st.layout, err = parseLayout(*layout, st.heavy, st.backends); err == nil {
		err = validate(st)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "heavy:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, st); err != nil {
		fmt.Fprintln(os.Stderr, "heavy:", err)
		os.Exit(1)
	}
}

// validate refuses settings that make no run, every problem at once.
func validate(st settings) error {
	var errs []error
	for _, v := range []struct {
		name string
		n    int
	}{{"-established", st.established}, {"-rounds", st.rounds}, {"-capacity", st.capacity}, {"-heavy", st.heavy}, {"-in-flight", st.inFlight}, {"-sessions", st.sessions}, {"-requests", st.requests}} {
		if v.n < 1 {
			errs = append(errs, fmt.Errorf("%s must be at least 1", v.name))
		}
	}
	if st.envoys != 1 && st.envoys != 2 {
		errs = append(errs, errors.New("-envoys must be 1 or 2"))
	}
	if st.join && (st.envoys != 1 || st.layout != nil) {
		errs = append(errs, errors.New("-join runs one Envoy and no heavy sessions: no -envoys 2, no -layout"))
	}
	if st.over <= 0 || st.gap <= 0 || st.work < 0 {
		errs = append(errs, errors.New("-over and -gap must be above 0, -work at least 0"))
	}
	if st.only != "" && st.out != "" {
		errs = append(errs, errors.New("-only runs part of the table: not with -out"))
	}
	if st.loadInterval < 100*time.Millisecond || st.loadFactor < 1 {
		errs = append(errs, errors.New("-load-interval must be at least 100ms and -load-factor at least 1, as the load block takes them"))
	}
	return errors.Join(errs...)
}

// parseLayout reads "2,1,1": counts per host, largest first, summing to
// heavy, no more than backends of them. "" is no layout.
func parseLayout(s string, heavy, backends int) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	sum := 0
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-layout %q: %q is not a count", s, f)
		}
		if len(out) > 0 && n > out[len(out)-1] {
			return nil, fmt.Errorf("-layout %q: counts must come largest first", s)
		}
		out = append(out, n)
		sum += n
	}
	if len(out) > backends || sum != heavy {
		return nil, fmt.Errorf("-layout %q: want at most %d counts summing to -heavy %d", s, backends, heavy)
	}
	for len(out) < backends {
		out = append(out, 0)
	}
	return out, nil
}

func run(ctx context.Context, st settings) error {
	root, err := launch.ModuleRoot()
	if err != nil {
		return err
	}
	dir, bins, remove, err := launch.BuildTemp("heavy")
	if err != nil {
		return err
	}
	defer remove()
	if st.join {
		return runJoin(ctx, st, bins, root, dir)
	}
	configs, err := configurations(root, dir, st)
	if err != nil {
		return err
	}
	var rows []row
	for r := 1; r <= st.rounds; r++ {
		for i, c := range configs {
			res, err := scenario(ctx, st, bins, c, filepath.Join(dir, fmt.Sprintf("r%d-%d", r, i)))
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r, c.name, err)
			}
			w := summarize(c, r, res)
			fmt.Fprintln(os.Stderr, w.progress())
			rows = append(rows, w)
		}
	}
	report := render(st, rows, configs)
	fmt.Print(report)
	if st.out != "" {
		name := "heavy"
		if st.envoys == 2 {
			name = "heavy-envoys"
		}
		if err := splice(st.out, name, report); err != nil {
			return err
		}
	}
	return broken(rows)
}

// broken names every run in which a request failed or a sticky
// configuration answered a session from two hosts: not a figure of
// placement but a fault of the stack or of the scenario, so the run fails.
func broken(rows []row) error {
	var errs []error
	for _, w := range rows {
		if w.heavyFailed+w.failed > 0 {
			errs = append(errs, fmt.Errorf("round %d, %s: %d heavy and %d ordinary requests failed", w.round, w.config.name, w.heavyFailed, w.failed))
		}
		if w.config.sticky && w.heavySplit+w.split > 0 {
			errs = append(errs, fmt.Errorf("round %d, %s: %d heavy and %d ordinary sessions answered by two hosts", w.round, w.config.name, w.heavySplit, w.split))
		}
	}
	return errors.Join(errs...)
}

// configurations are the measured set, Envoy's variants written into dir.
func configurations(root, dir string, st settings) ([]config, error) {
	bench := filepath.Join(root, "e2e", "bench")
	cookieLR := filepath.Join(dir, "envoy-cookie-least-request.yaml")
	plainLR := filepath.Join(dir, "least-request.yaml")
	for _, v := range []struct{ src, dst string }{
		{filepath.Join(bench, "envoy-cookie.yaml"), cookieLR},
		{filepath.Join(bench, "baseline.yaml"), plainLR},
	} {
		if err := launch.WriteVariant(v.src, v.dst, "lb_policy: ROUND_ROBIN", "lb_policy: LEAST_REQUEST"); err != nil {
			return nil, err
		}
	}
	loadName := fmt.Sprintf("verified, load %g (requests in flight)", st.loadFactor)
	if st.loadInterval != 250*time.Millisecond {
		loadName = fmt.Sprintf("verified, load %g read every %v (requests in flight)", st.loadFactor, st.loadInterval)
	}
	all := []config{
		{name: "verified", mode: "verified", sticky: true},
		{name: "verified, bounded_load 1.25", mode: "verified", loadFactor: 1.25, sticky: true},
		{name: loadName, mode: "verified", load: &launch.Load{Interval: st.loadInterval, Factor: st.loadFactor}, sticky: true},
		{name: "Envoy's cookie over LEAST_REQUEST", mode: "opaque", yaml: cookieLR, sticky: true},
		{name: "round robin, no affinity", mode: "opaque", yaml: filepath.Join(bench, "baseline.yaml")},
		{name: "LEAST_REQUEST, no affinity", mode: "opaque", yaml: plainLR},
	}
	var out []config
	for _, c := range all {
		if strings.Contains(c.name, st.only) {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-only %q names no configuration", st.only)
	}
	return out, nil
}

// runJoin runs the joining-host scenario over its configurations.
func runJoin(ctx context.Context, st settings, bins launch.Binaries, root, dir string) error {
	configs, err := joinConfigurations(root, dir)
	if err != nil {
		return err
	}
	var rows []joinRow
	for r := 1; r <= st.rounds; r++ {
		for i, c := range configs {
			res, err := joinScenario(ctx, st, bins, c, filepath.Join(dir, fmt.Sprintf("join-r%d-%d", r, i)))
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r, c.name, err)
			}
			w := summarizeJoin(c, r, res)
			fmt.Fprintln(os.Stderr, w.progress())
			rows = append(rows, w)
		}
	}
	report := renderJoin(st, rows, configs)
	fmt.Print(report)
	if st.out != "" {
		if err := splice(st.out, "heavy-join", report); err != nil {
			return err
		}
	}
	return brokenJoin(rows)
}

// joinConfigurations are the configurations a host joins: this project
// with and without the load block, and Envoy's cookie over LEAST_REQUEST
// with its hosts from the endpoints file (so that the stack can add one).
func joinConfigurations(root, dir string) ([]config, error) {
	cookieLR := filepath.Join(dir, "envoy-cookie-least-request-eds.yaml")
	if err := writeEDSVariant(filepath.Join(root, "e2e", "bench", "envoy-cookie.yaml"), cookieLR); err != nil {
		return nil, err
	}
	return []config{
		{name: "verified", mode: "verified", sticky: true},
		{name: "verified, load 1.25 (requests in flight)", mode: "verified", load: &launch.Load{Interval: 250 * time.Millisecond, Factor: 1.25}, sticky: true},
		{name: "Envoy's cookie over LEAST_REQUEST", mode: "opaque", yaml: cookieLR, sticky: true},
	}, nil
}
